"""GCS-only operations beside storage.py's file API (google-cloud-storage): object custom
metadata merged under preconditions, and generation-conditional writes for the output claim.

gs:// goes to the emulator named by STORAGE_EMULATOR_HOST (anonymously) when it is set.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import fsspec

from components.common.storage import GCS_SCHEMES, emulator_host

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Client

METADATA_ATTEMPTS = 8


@functools.cache
def _client(endpoint: str | None, pid: int) -> Client:
    """One client per endpoint and process (pid in the key: a fork must not share sockets)."""
    from google.cloud import storage

    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            client_options={"api_endpoint": endpoint},
            credentials=AnonymousCredentials(),
            project="test",
        )
    return storage.Client()


def _blob(url: str) -> Blob:
    """The google-cloud-storage Blob for a gs:// object URL."""
    protocol, rest = fsspec.core.split_protocol(url)
    bucket, _, name = (rest or "").partition("/")
    if protocol not in GCS_SCHEMES:
        raise ValueError(
            f"{url} is not a gs:// URL: custom object metadata exists only on GCS objects "
            "(for local files keep such data in a JSONL or manifest beside them)"
        )
    if not bucket or not name or name.endswith("/"):
        raise ValueError(f"{url} does not name an object: use gs://<bucket>/<object>")
    return _client(emulator_host(), os.getpid()).bucket(bucket).blob(name)


@contextlib.contextmanager
def _naming(url: str) -> Iterator[None]:
    """Turn google-cloud-storage's NotFound (object or bucket) into a FileNotFoundError."""
    from google.api_core.exceptions import NotFound

    try:
        yield
    except NotFound:
        raise FileNotFoundError(f"{url} does not exist") from None


def get_metadata(url: str) -> dict[str, str]:
    """Custom metadata of a gs:// object (empty dict if it has none)."""
    blob = _blob(url)
    with _naming(url):
        blob.reload()
    return dict(blob.metadata or {})


def merge_metadata(url: str, updates: dict[str, str]) -> dict[str, str]:
    """Add or overwrite keys in a gs:// object's custom metadata, keeping all others.

    Read, merge, patch with generation and metageneration preconditions; when another writer
    got in between (412), read again and retry with backoff. Values are stored as strings.
    """
    import tenacity
    from google.api_core.exceptions import PreconditionFailed

    blob = _blob(url)
    wanted = {str(key): str(value) for key, value in updates.items()}
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(PreconditionFailed),
        stop=tenacity.stop_after_attempt(METADATA_ATTEMPTS),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
    )
    try:
        for attempt in retrying:
            with attempt, _naming(url):
                blob.reload()
                current = dict(blob.metadata or {})
                merged = {**current, **wanted}
                if merged == current:
                    return current  # nothing to change: skip the write
                # The full map is sent: real GCS merges keys on patch, emulators replace
                # the map; with every key present both end in the same state.
                blob.metadata = merged
                # The generation guards against the object being re-uploaded meanwhile: a new
                # generation starts again at metageneration 1, which could match by chance.
                blob.patch(
                    if_generation_match=blob.generation,
                    if_metageneration_match=blob.metageneration,
                )
                return dict(blob.metadata or {})
    except tenacity.RetryError as error:
        raise RuntimeError(
            f"could not update metadata of {url}: another writer changed it on each of "
            f"{METADATA_ATTEMPTS} attempts; retry later"
        ) from error.last_attempt.exception()
    raise AssertionError("unreachable: tenacity either returns or raises")


# Generation preconditions: what makes the output claim exclusive on gs://.


def generation_of(url: str) -> tuple[int, float, str] | None:
    """(generation, last update as a Unix time, text) of a small gs:// object, or None."""
    from google.api_core.exceptions import NotFound

    blob = _blob(url)
    try:
        blob.reload()
        generation, updated = int(blob.generation), blob.updated.timestamp()
        text = blob.download_as_bytes(if_generation_match=generation).decode(errors="replace")
    except NotFound:
        return None
    return generation, updated, text


def write_if_generation(url: str, data: bytes, generation: int) -> int:
    """Upload `data` only if the object is at `generation` (0: only if absent); return the
    new generation. FileExistsError when the object is not at that generation."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = _blob(url)
    try:
        blob.upload_from_string(data, if_generation_match=generation)
    except PreconditionFailed:
        raise FileExistsError(f"{url} changed (expected generation {generation})") from None
    except NotFound:
        raise FileNotFoundError(
            f"bucket gs://{blob.bucket.name} of {url} does not exist (or these credentials "
            "cannot see it): create it or fix the URL"
        ) from None
    return int(blob.generation)


def delete_if_generation(url: str, generation: int) -> None:
    """Delete a gs:// object only if it is still at `generation` (else nothing happens)."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    with contextlib.suppress(NotFound, PreconditionFailed):
        _blob(url).delete(if_generation_match=generation)
