"""One small file API over local paths, file://, gs:// and memory:// URLs (fsspec + gcsfs).

gs:// goes to the emulator named by STORAGE_EMULATOR_HOST (anonymously) when it is set.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO, Any

# gcsfs reads this once, at import: left on, every call first probes for hierarchical-namespace
# buckets, which stalls about 60 s per call against an emulator. Set before gcsfs is imported
# (fsspec imports it lazily on the first gs:// URL); an explicit setting by the user still wins.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec
from fsspec.implementations.local import LocalFileSystem

GCS_SCHEMES = ("gs", "gcs")


def emulator_host() -> str | None:
    """The GCS emulator endpoint from STORAGE_EMULATOR_HOST as an http(s) URL, or None."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if not host or host == "default":
        return None
    return host if "://" in host else f"http://{host}"


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `url` and the path inside it (e.g. `bucket/key` for gs://)."""
    protocol, _ = fsspec.core.split_protocol(url)
    options: dict[str, Any] = {}
    if protocol in GCS_SCHEMES:
        # gcsfs's listing cache goes stale as soon as Beam or google-cloud-storage writes
        # the same bucket, so it is off. The endpoint is part of fsspec's instance-cache key,
        # so a test that points STORAGE_EMULATOR_HOST elsewhere gets a new instance.
        options["use_listings_cache"] = False
        host = emulator_host()
        if host:
            options.update(token="anon", endpoint_url=host)
    return fsspec.core.url_to_fs(url, **options)


def join(url: str, *parts: str) -> str:
    """Join path parts onto a path or URL with "/" (never resets on a part starting with "/")."""
    tail = "/".join(part.strip("/") for part in parts if part.strip("/"))
    if not tail:
        return url
    head = url if not url or url.endswith("://") else url.rstrip("/") + "/"
    return head + tail


def canonical(url: str) -> str:
    """One spelling per place, resolvable from anywhere: a local path or file:// URL becomes
    an absolute local path ("." and ".." folded, symlinks kept as named); other URLs
    (gs://...) are kept as given, minus a trailing "/"."""
    protocol, path = fsspec.core.split_protocol(url)
    if protocol in (None, "file", "local"):
        return os.path.abspath(os.path.expanduser(path))
    return url.rstrip("/") if not url.endswith("://") else url


def relative_path(root: str, url: str) -> str | None:
    """`url`'s path below `root` ("" for root itself), or None when it is not inside it
    (local: symlinks and ".." resolved; elsewhere: "." and ".." segments folded, as a client
    would name the object)."""
    root_fs, root_path = filesystem(root)
    url_fs, path = filesystem(url)
    if type(root_fs) is not type(url_fs):
        return None
    if isinstance(url_fs, LocalFileSystem):
        root_path, path = os.path.realpath(root_path), os.path.realpath(path)
    else:
        root_path, path = posixpath.normpath(root_path), posixpath.normpath(path)
    if path == root_path:
        return ""
    head = root_path.rstrip("/") + "/"
    return path[len(head) :] if path.startswith(head) else None


def is_within(root: str, url: str) -> bool:
    """Whether `url` resolves to a place strictly inside `root`."""
    return bool(relative_path(root, url))


@contextlib.contextmanager
def _naming(url: str) -> Iterator[None]:
    """Re-raise a backend's bare FileNotFoundError (it names an API path) with the URL."""
    try:
        yield
    except FileNotFoundError as error:
        hint = ""
        if fsspec.core.split_protocol(url)[0] in GCS_SCHEMES:
            hint = " (check the bucket and object name, and that these credentials can read it)"
        raise FileNotFoundError(f"{url} does not exist{hint}") from error


@contextlib.contextmanager
def _replacing(path: str) -> Iterator[str]:
    """Yield a temp path beside local `path`; on success it atomically replaces `path`."""
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    # Same directory, so os.replace is a rename within one filesystem: readers see the old
    # file or the new one, never half of it. The dot prefix keeps it out of most globs.
    temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:  # not `finally`: raising FileNotFoundError on every success is slow
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise


def open_file(url: str, mode: str = "rb") -> IO[Any]:
    """Open a file for streaming (text modes are UTF-8); writes are not atomic on local disk."""
    fs, path = filesystem(url)
    text = {} if "b" in mode else {"encoding": "utf-8"}
    if isinstance(fs, LocalFileSystem) and mode[0] in "wax":
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with _naming(url):
        return fs.open(path, mode, **text)


def read_bytes(url: str) -> bytes:
    """The whole content of one file."""
    fs, path = filesystem(url)
    with _naming(url):
        return fs.cat_file(path)


def write_bytes(url: str, data: bytes) -> None:
    """Write one file whole: local writes go through a temp file and os.replace."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        with _replacing(path) as temp, open(temp, "xb") as stream:
            stream.write(data)
            # Without fsync a crash soon after the rename can leave an empty file.
            stream.flush()
            os.fsync(stream.fileno())
        return
    # One upload request: a GCS object appears whole or not at all.
    fs.pipe_file(path, data)


def read_text(url: str) -> str:
    """The whole content of one UTF-8 text file."""
    return read_bytes(url).decode("utf-8")


def write_text(url: str, text: str) -> None:
    """Write one UTF-8 text file whole (atomically on local disk)."""
    write_bytes(url, text.encode("utf-8"))


def exists(url: str) -> bool:
    """True if a file or a directory (on GCS: any object under the prefix) is there."""
    fs, path = filesystem(url)
    return fs.exists(path)


def size(url: str) -> int:
    """Size of one file in bytes."""
    fs, path = filesystem(url)
    with _naming(url):
        return fs.size(path)


def _rebase(url: str, base: str, found: str) -> str:
    """Turn a backend path found under `base` back into a URL spelled like `url`."""
    return url.rstrip("/") + found[len(base) :] if found.startswith(base) else found


def list_files(prefix_url: str, recursive: bool = True) -> Iterator[str]:
    """Files under a directory URL, sorted, spelled with the same scheme as `prefix_url`."""
    fs, path = filesystem(prefix_url)
    base = path.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        names = _local_files(base, recursive)
    else:
        with _naming(prefix_url):
            found = fs.find(path, maxdepth=None if recursive else 1, detail=True)
        # Consoles and some tools create zero-length "folder/" objects; they are not files.
        names = [
            name
            for name, info in found.items()
            if not (name.endswith("/") or info.get("name", "").endswith("/"))
        ]
        del found
    yield from sorted(_rebase(prefix_url, base, name) for name in names)


def _local_files(base: str, recursive: bool) -> list[str]:
    """File paths under a local directory, by name only: fsspec's find keeps a stat dict per
    file (~1 KB), which for a folder of a million images is a GB in the listing worker."""
    if os.path.isfile(base):
        return [base]
    names = []
    for folder, subfolders, files in os.walk(base):
        names += [posixpath.join(folder, name) for name in files]
        if not recursive:
            subfolders.clear()
    return names


def shallow_files(out: str, folders: tuple[str, ...]) -> list[str]:
    """Files at the top of `out` and directly in its `folders`, relative to `out`."""
    found = []
    for folder in ("", *folders):
        where = join(out, folder)
        if folder and not exists(where):
            continue
        for url in list_files(where, recursive=False):
            name = url.rsplit("/", 1)[-1]
            found.append(f"{folder}/{name}" if folder else name)
    return found


def list_dirs(url: str) -> list[str]:
    """Names of the immediate sub-directories of a directory URL, sorted."""
    fs, path = filesystem(url)
    base = path.rstrip("/")
    with _naming(url):
        entries = fs.ls(path, detail=True)
    names = {
        posixpath.basename(entry["name"].rstrip("/"))
        for entry in entries
        if entry["type"] == "directory" and entry["name"].rstrip("/") != base
    }
    return sorted(names)


def makedirs(url: str) -> None:
    """Create a directory and its parents; a no-op on GCS, where prefixes need no object."""
    fs, path = filesystem(url)
    if fsspec.core.split_protocol(url)[0] in GCS_SCHEMES:
        return  # and gcsfs would create a missing *bucket* here, which is never wanted
    fs.makedirs(path, exist_ok=True)


def delete(url: str, recursive: bool = False) -> None:
    """Delete one file, or a whole directory (prefix) with recursive=True."""
    fs, path = filesystem(url)
    try:
        fs.rm(path, recursive=recursive)
    except (OSError, ValueError) as error:
        # Each backend refuses a non-recursive directory delete differently (gcsfs even says
        # "not found"): one error for all.
        if not recursive and fs.isdir(path):
            raise IsADirectoryError(
                f"{url} is a directory; pass recursive=True to delete it and all under it"
            ) from error
        if isinstance(error, FileNotFoundError):
            raise FileNotFoundError(f"{url} does not exist") from error
        raise


def copy(src: str, dst: str) -> None:
    """Copy one file, across schemes too; server-side within GCS, atomic into local disk."""
    src_fs, src_path = filesystem(src)
    dst_fs, dst_path = filesystem(dst)
    try:
        if isinstance(dst_fs, LocalFileSystem):
            with _replacing(dst_path) as temp:
                src_fs.get_file(src_path, temp)
        elif src_fs is dst_fs:
            dst_fs.cp_file(src_path, dst_path)
        elif isinstance(src_fs, LocalFileSystem):
            dst_fs.put_file(src_path, dst_path)
        else:
            # memory:// <-> gs:// only (tests): small files, so going through memory is fine.
            dst_fs.pipe_file(dst_path, src_fs.cat_file(src_path))
    except FileNotFoundError as error:
        missing = dst if src_fs.exists(src_path) else src  # e.g. the target bucket is missing
        raise FileNotFoundError(f"cannot copy {src} to {dst}: {missing} does not exist") from error


def move(src: str, dst: str) -> None:
    """Move one file: a rename on local disk and memory://, copy then delete elsewhere."""
    src_fs, src_path = filesystem(src)
    dst_fs, dst_path = filesystem(dst)
    if src_fs is dst_fs and fsspec.core.split_protocol(src)[0] not in GCS_SCHEMES:
        if isinstance(dst_fs, LocalFileSystem):
            os.makedirs(os.path.dirname(dst_path), exist_ok=True)
        with _naming(src):
            src_fs.mv(src_path, dst_path)
        return
    # gcsfs's mv first tries the objects.move API; emulators answer 501 and gcsfs retries
    # for ~30 s before falling back. A server-side copy plus delete is what Beam does too.
    copy(src, dst)
    delete(src)


def local_copy(url: str) -> str:
    """A local path with the file's content: the path itself if local, else a fresh download.

    Downloads land in a new temp directory under the original file name (Keras picks the
    format from the suffix) and are left for the process to reuse; the caller may delete it.
    """
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        if not fs.isfile(path):
            raise FileNotFoundError(f"{url} does not exist")
        return path
    target = os.path.join(tempfile.mkdtemp(prefix="gallerytag-"), posixpath.basename(path))
    with _naming(url):
        fs.get_file(path, target)
    return target
