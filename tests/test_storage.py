"""components.common.storage on local paths, file://, memory:// and a real GCS emulator.

The gs:// cases run against the gcp-storage-emulator process from tests/gcs_emulator.py.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from components.common import gcs, storage
from tests.gcs_emulator import anonymous_client

if TYPE_CHECKING:
    from google.cloud.storage import Blob

SCHEMES = ["local", "file", "memory", "gs"]


@pytest.fixture(params=SCHEMES)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty directory URL on each backend, spelled the way a user would pass it."""
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "file":
        return f"file://{tmp_path}/root"
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex[:12]}/root"
    bucket = request.getfixturevalue("gcs_bucket")
    return f"gs://{bucket}/root"


def _emulator_blob(bucket: str, name: str) -> Blob:
    """The object as another client (a console, another service) sees it, bypassing storage."""
    return anonymous_client(os.environ["STORAGE_EMULATOR_HOST"]).bucket(bucket).blob(name)


def _populate(root: str) -> list[str]:
    """Write a small tree and return its file URLs in sorted order."""
    names = ["b.txt", "a/2.jpg", "a/1.jpg", "a/deep/x.jpg", "c/y.jpg"]
    for name in names:
        storage.write_bytes(storage.join(root, name), name.encode())
    return sorted(storage.join(root, name) for name in names)


def test_round_trip_bytes_and_text(root: str):
    """Bytes, UTF-8 text and streamed writes read back unchanged; size matches."""
    data = bytes(range(256)) * 10
    path = storage.join(root, "sub", "blob.bin")
    storage.write_bytes(path, data)
    assert storage.read_bytes(path) == data
    assert storage.size(path) == len(data)

    text_path = storage.join(root, "notes.txt")
    storage.write_text(text_path, "café\nzwei\n")
    assert storage.read_text(text_path) == "café\nzwei\n"
    with storage.open_file(text_path, "r") as stream:
        assert stream.readlines() == ["café\n", "zwei\n"]

    streamed = storage.join(root, "streamed", "out.txt")
    with storage.open_file(streamed, "w") as stream:
        stream.write("ü")
    assert storage.read_bytes(streamed) == "ü".encode()


def test_listing_is_recursive_sorted_and_keeps_the_scheme(root: str):
    """Files only, sorted, spelled like the prefix given; non-recursive and list_dirs too."""
    expected = _populate(root)
    found = list(storage.list_files(root))
    assert found == expected
    prefix = root.split("://", 1)[0] + "://" if "://" in root else "/"
    assert all(url.startswith(prefix) for url in found)
    assert list(storage.list_files(root + "/")) == expected

    assert list(storage.list_files(root, recursive=False)) == [storage.join(root, "b.txt")]
    assert list(storage.list_files(storage.join(root, "a"), recursive=False)) == [
        storage.join(root, "a", "1.jpg"),
        storage.join(root, "a", "2.jpg"),
    ]
    assert storage.list_dirs(root) == ["a", "c"]
    assert storage.list_dirs(storage.join(root, "a")) == ["deep"]


def test_exists_delete_and_directories(root: str):
    """exists sees files and directories; a directory needs recursive=True to go."""
    _populate(root)
    file_url = storage.join(root, "a", "1.jpg")
    assert storage.exists(file_url)
    assert storage.exists(storage.join(root, "a"))
    assert not storage.exists(storage.join(root, "nope.jpg"))

    storage.delete(file_url)
    assert not storage.exists(file_url)
    with pytest.raises(IsADirectoryError, match="recursive=True"):
        storage.delete(storage.join(root, "a"))
    storage.delete(storage.join(root, "a"), recursive=True)
    assert not storage.exists(storage.join(root, "a", "2.jpg"))
    assert list(storage.list_files(root)) == [
        storage.join(root, "b.txt"),
        storage.join(root, "c", "y.jpg"),
    ]


def test_missing_file_errors_name_the_url(root: str):
    """Every read of a missing file raises FileNotFoundError naming the URL."""
    missing = storage.join(root, "missing", "x.jpg")
    for call in (storage.read_bytes, storage.read_text, storage.size, storage.delete):
        with pytest.raises(FileNotFoundError, match=f"^{missing} does not exist"):
            call(missing)
    with pytest.raises(FileNotFoundError, match=f"^{missing} does not exist"):
        storage.open_file(missing, "rb")
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
        storage.copy(missing, storage.join(root, "y.jpg"))


def test_copy_and_move_within_a_backend(root: str):
    """copy keeps the source; move removes it; target folders appear as needed."""
    src = storage.join(root, "in", "photo.jpg")
    storage.write_bytes(src, b"jpeg bytes")
    copied = storage.join(root, "out", "label", "photo.jpg")
    storage.copy(src, copied)
    assert storage.read_bytes(copied) == b"jpeg bytes"
    assert storage.exists(src)

    moved = storage.join(root, "final", "photo.jpg")
    storage.move(copied, moved)
    assert not storage.exists(copied)
    assert storage.read_bytes(moved) == b"jpeg bytes"


def test_makedirs_then_list_dirs(root: str):
    """makedirs is idempotent (a no-op on GCS) and a written folder is listed."""
    storage.makedirs(storage.join(root, "staging"))
    storage.makedirs(storage.join(root, "staging"))  # idempotent
    storage.write_text(storage.join(root, "staging", "part.txt"), "x")
    assert storage.list_dirs(root) == ["staging"]


@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (("gs://b/", "a", "/x.jpg"), "gs://b/a/x.jpg"),
        (("gs://", "b", "x.jpg"), "gs://b/x.jpg"),
        (("/data", "cat/"), "/data/cat"),
        (("/", "data"), "/data"),
        (("rel", "a"), "rel/a"),
        (("memory://m/root",), "memory://m/root"),
    ],
)
def test_join(parts: tuple[str, ...], joined: str):
    """Parts are joined with one "/", whatever slashes they carry."""
    assert storage.join(*parts) == joined


@pytest.mark.parametrize("form", ["relative", "file"])
def test_local_spellings(form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Relative paths and file:// URLs list back in the spelling they were given."""
    monkeypatch.chdir(tmp_path)
    root = "gallery" if form == "relative" else f"file://{tmp_path}/gallery"
    storage.write_bytes(storage.join(root, "cat", "1.jpg"), b"1")
    assert list(storage.list_files(root)) == [storage.join(root, "cat", "1.jpg")]
    assert (tmp_path / "gallery" / "cat" / "1.jpg").read_bytes() == b"1"


def test_local_write_is_atomic_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A rewrite replaces the file whole; a failed one keeps the old content, no temp left."""
    target = tmp_path / "out" / "manifest.json"
    storage.write_text(str(target), "old")
    storage.write_text(str(target), "new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["manifest.json"]

    def crash(fd: int) -> None:
        raise OSError("disk full")

    # A failure mid-write must leave the previous content whole and no temp file behind.
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        storage.write_text(str(target), "half")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["manifest.json"]


def test_copy_across_backends(gcs_bucket: str, tmp_path: Path):
    """local -> gs -> local copies, gs -> memory move, and local_copy of a remote file."""
    local = tmp_path / "photo.jpg"
    local.write_bytes(b"pixels")
    remote = f"gs://{gcs_bucket}/up/photo.jpg"
    storage.copy(str(local), remote)
    assert storage.read_bytes(remote) == b"pixels"

    back = tmp_path / "down" / "photo.jpg"
    storage.copy(remote, str(back))
    assert back.read_bytes() == b"pixels"
    assert os.listdir(back.parent) == ["photo.jpg"]

    in_memory = f"memory://test-{uuid.uuid4().hex[:12]}/photo.jpg"
    storage.move(remote, in_memory)
    assert storage.read_bytes(in_memory) == b"pixels"
    assert not storage.exists(remote)

    model = storage.local_copy(in_memory)
    assert Path(model).name == "photo.jpg"
    assert Path(model).read_bytes() == b"pixels"
    assert storage.local_copy(str(local)) == str(local)


def test_gcs_listing_skips_directory_markers_and_sees_foreign_writes(gcs_bucket: str):
    """Zero-length `folder/` objects are not files; objects written by others show up."""
    storage.write_text(f"gs://{gcs_bucket}/img/a.jpg", "a")
    assert list(storage.list_files(f"gs://{gcs_bucket}/img")) == [f"gs://{gcs_bucket}/img/a.jpg"]
    # Written behind gcsfs's back, as the console ("create folder") and other tools do.
    for name, data in [("img/", b""), ("img/sub/", b""), ("img/sub/b.jpg", b"b")]:
        _emulator_blob(gcs_bucket, name).upload_from_string(data)
    assert list(storage.list_files(f"gs://{gcs_bucket}/img")) == [
        f"gs://{gcs_bucket}/img/a.jpg",
        f"gs://{gcs_bucket}/img/sub/b.jpg",
    ]
    assert list(storage.list_files(f"gs://{gcs_bucket}")) == [
        f"gs://{gcs_bucket}/img/a.jpg",
        f"gs://{gcs_bucket}/img/sub/b.jpg",
    ]
    assert storage.list_dirs(f"gs://{gcs_bucket}/img") == ["sub"]
    assert storage.exists(f"gs://{gcs_bucket}/img/sub")


def test_missing_bucket_error_names_the_url(gcs_bucket: str):
    """A missing bucket reads as a missing file, named by its URL."""
    url = f"gs://{gcs_bucket}-absent/x.jpg"
    with pytest.raises(FileNotFoundError, match=f"^{url} does not exist"):
        storage.read_bytes(url)


def test_filesystem_follows_the_emulator_setting(gcs_bucket: str, monkeypatch: pytest.MonkeyPatch):
    """A changed STORAGE_EMULATOR_HOST gives a new gcsfs instance, not a cached stale one."""
    url = f"gs://{gcs_bucket}/x.txt"
    first, path = storage.filesystem(url)
    assert path == f"{gcs_bucket}/x.txt"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:1")
    assert storage.filesystem(url)[0] is not first


def test_metadata_merge_keeps_foreign_keys(gcs_bucket: str):
    """Merging tags keeps a key another system put on the object; content is untouched."""
    url = f"gs://{gcs_bucket}/photos/room.jpg"
    storage.write_bytes(url, b"jpeg")
    assert gcs.get_metadata(url) == {}
    blob = _emulator_blob(gcs_bucket, "photos/room.jpg")
    blob.metadata = {"owner": "hotel-42"}
    blob.patch()

    merged = gcs.merge_metadata(url, {"gallerytag-top1": "winter", "gallerytag-score": "0.93"})
    expected = {"owner": "hotel-42", "gallerytag-top1": "winter", "gallerytag-score": "0.93"}
    assert merged == expected
    assert gcs.get_metadata(url) == expected

    again = gcs.merge_metadata(url, {"gallerytag-top1": "summer"})
    assert again == {**expected, "gallerytag-top1": "summer"}
    assert storage.read_bytes(url) == b"jpeg"


def test_metadata_merge_retries_when_another_writer_wins(
    gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
):
    """A 412 from a concurrent writer means read again and merge onto its result."""
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud.storage import Blob as RealBlob

    url = f"gs://{gcs_bucket}/room.jpg"
    storage.write_bytes(url, b"jpeg")
    other = _emulator_blob(gcs_bucket, "room.jpg")
    real_patch = RealBlob.patch
    calls: list[dict[str, Any]] = []

    def racing_patch(self: Blob, *args: Any, **kwargs: Any) -> None:
        calls.append(kwargs)
        if len(calls) == 1:
            # The emulator ignores preconditions, so play GCS: another writer lands first.
            other.metadata = {"reviewer": "ana"}
            real_patch(other)
            raise PreconditionFailed("metageneration changed")
        return real_patch(self, *args, **kwargs)

    monkeypatch.setattr(RealBlob, "patch", racing_patch)
    merged = gcs.merge_metadata(url, {"gallerytag-top1": "winter"})
    assert merged == {"reviewer": "ana", "gallerytag-top1": "winter"}
    assert len(calls) == 2
    for preconditions in calls:
        assert isinstance(preconditions["if_generation_match"], int)
        assert isinstance(preconditions["if_metageneration_match"], int)
    assert calls[1]["if_metageneration_match"] > calls[0]["if_metageneration_match"]


def test_metadata_merge_gives_up_with_a_clear_error(
    gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
):
    """If every attempt loses the race, the error says so instead of looping forever."""
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud.storage import Blob as RealBlob

    url = f"gs://{gcs_bucket}/busy.jpg"
    storage.write_bytes(url, b"jpeg")

    def always_late(self: Blob, *args: Any, **kwargs: Any) -> None:
        raise PreconditionFailed("metageneration changed")

    monkeypatch.setattr(RealBlob, "patch", always_late)
    monkeypatch.setattr(gcs, "METADATA_ATTEMPTS", 3)
    with pytest.raises(RuntimeError, match=f"could not update metadata of {url}.*3 attempts"):
        gcs.merge_metadata(url, {"gallerytag-top1": "winter"})


def test_metadata_errors(gcs_bucket: str, tmp_path: Path):
    """Non-gs URLs, bucket-only URLs and missing objects fail with a clear message."""
    with pytest.raises(ValueError, match="not a gs:// URL"):
        gcs.get_metadata(str(tmp_path / "x.jpg"))
    with pytest.raises(ValueError, match="does not name an object"):
        gcs.merge_metadata(f"gs://{gcs_bucket}", {"a": "b"})
    missing = f"gs://{gcs_bucket}/missing.jpg"
    with pytest.raises(FileNotFoundError, match=f"^{missing} does not exist"):
        gcs.merge_metadata(missing, {"a": "b"})


def test_beam_reads_and_writes_gs_with_an_anonymous_client(
    gcs_bucket: str, beam_gcs_anonymous: str
):
    """A DirectRunner pipeline reads and writes gs:// on the emulator in about a second."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    source = f"gs://{gcs_bucket}/in/lines.txt"
    storage.write_text(source, "winter\nsummer\nspring\n")
    out = f"gs://{gcs_bucket}/out/upper"
    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "Read" >> beam.io.ReadFromText(source)
            | "Upper" >> beam.Map(str.upper)
            | "Write"
            >> beam.io.WriteToText(
                out, num_shards=1, shard_name_template="", file_name_suffix=".txt"
            )
        )
    # With the default client each run first spends ~25 s retrying google.auth.default.
    assert time.monotonic() - started < 15
    assert list(storage.list_files(f"gs://{gcs_bucket}/out")) == [f"{out}.txt"]
    assert sorted(storage.read_text(f"{out}.txt").split()) == ["SPRING", "SUMMER", "WINTER"]
