"""An exclusive claim on an output folder, so two runs never write into one `--out` at once.

The claim is the file `<out>/_CLAIM.json`, created only if absent. Locally it is a hard link
to a file this process already holds an `flock` on: the kernel drops the lock when the holder
dies (SIGKILL included), so a later run can prove a leftover claim stale and take it over.
On GCS it is created with `ifGenerationMatch=0` and rewritten every HEARTBEAT_S seconds with
a generation precondition; a claim not rewritten for STALE_S seconds is stale.
Every run stages under `<out>/.staging-<run id>/` only after it holds the claim, so while a
run holds it, every other staging folder belongs to a run that no longer does.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
from fsspec.implementations.local import LocalFileSystem

from components.common import gcs, storage

log = logging.getLogger(__name__)
CLAIM_NAME = "_CLAIM.json"
STAGING_PREFIX = ".staging-"
TEMP_PREFIX = ".claim-"
HEARTBEAT_S = 30.0
STALE_S = 300.0


class OutputBusy(RuntimeError):
    """Another live run holds the output folder (or took it over from this run)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _describe(out: str, text: str) -> str:
    """The refusal message for a claim held by someone else, naming who and the fix."""
    try:
        holder = json.loads(text)
        who = (
            f"run {holder.get('run_id')}, pid {holder.get('pid')} on {holder.get('host')}, "
            f"started {holder.get('started')}"
        )
    except (json.JSONDecodeError, AttributeError):
        who = "unreadable claim"
    return (
        f"{out} is being written by another gallerytag run ({who}); wait for it to finish "
        f"or use another output. A claim whose run died is taken over by the next run "
        f"(local folders: at once; gs://: after {STALE_S:.0f} s without a heartbeat)."
    )


@dataclass
class OutputClaim:
    """This run's hold on one output folder; `staging` is the only folder it writes to."""

    out: str
    run_id: str
    record: dict
    fd: int | None = None  # local: the open, flock-ed claim file
    generation: int | None = None  # gs://: the claim object's generation we wrote last
    lost: str | None = None  # why the claim is no longer ours (gs:// heartbeat failed)
    _stop: threading.Event = field(default_factory=threading.Event)
    _writing: threading.Lock = field(default_factory=threading.Lock)  # heartbeat vs verify
    _heartbeat: threading.Thread | None = None

    @property
    def path(self) -> str:
        """URL of the claim file."""
        return storage.join(self.out, CLAIM_NAME)

    @property
    def staging(self) -> str:
        """This run's staging folder."""
        return storage.join(self.out, f"{STAGING_PREFIX}{self.run_id}")

    def verify(self) -> None:
        """Raise OutputBusy unless the claim is still this run's (checked before committing)."""
        if self.lost:
            raise OutputBusy(f"lost the claim on {self.out}: {self.lost}; run again")
        if self.fd is not None:
            _, path = storage.filesystem(self.path)
            try:
                same = os.stat(path).st_ino == os.fstat(self.fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                raise OutputBusy(f"the claim {self.path} was removed or replaced; run again")
        elif self.generation is not None:
            try:
                with self._writing:  # not between a heartbeat's write and its new generation
                    current = gcs.generation_of(self.path)
                    ours = self.generation
            except Exception as error:
                raise OutputBusy(f"cannot read the claim {self.path}: {error}") from None
            if current is None or current[0] != ours:
                raise OutputBusy(f"another run took over {self.out}; run again")

    def release(self) -> None:
        """Give the claim up (remove the file, then drop the lock or stop the heartbeat)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.fd is not None:
            path = storage.filesystem(self.path)[1]
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(self.fd).st_ino:
                    os.unlink(path)
            os.close(self.fd)  # drops the lock
            self.fd = None
        elif self.generation is not None:
            if not self.lost:
                with contextlib.suppress(Exception):
                    gcs.delete_if_generation(self.path, self.generation)
        else:
            with contextlib.suppress(FileNotFoundError):
                storage.delete(self.path)

    def _beat(self) -> None:
        """Rewrite the gs:// claim every HEARTBEAT_S while the run lives."""
        while not self._stop.wait(HEARTBEAT_S):
            self.record["heartbeat"] = _now()
            try:
                with self._writing:
                    self.generation = gcs.write_if_generation(
                        self.path, json.dumps(self.record).encode(), self.generation or 0
                    )
            except Exception as error:  # precondition failed or GCS unreachable
                self.lost = f"heartbeat failed ({type(error).__name__}: {error})"
                log.error("%s: %s", self.out, self.lost)
                return


def _is_local(url: str) -> bool:
    return isinstance(storage.filesystem(url)[0], LocalFileSystem)


def _is_gcs(url: str) -> bool:
    return fsspec.core.split_protocol(url)[0] in storage.GCS_SCHEMES


def acquire(out: str) -> OutputClaim:
    """Claim `out` for this run, taking over a provably stale claim; else raise OutputBusy."""
    out = out.rstrip("/")
    record = {
        "run_id": uuid.uuid4().hex[:12],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _now(),
        "command": " ".join(sys.argv)[:500],
    }
    claim = OutputClaim(out, record["run_id"], record)
    if _is_local(out) and os.path.isfile(storage.filesystem(out)[1]):
        raise ValueError(f"output {out} is a file; name a folder (it is created if missing)")
    if _is_local(out):
        claim.fd = _acquire_local(storage.filesystem(out)[1], claim)
    elif _is_gcs(out):
        claim.generation = _acquire_gcs(claim)
        claim._heartbeat = threading.Thread(target=claim._beat, daemon=True, name="claim")
        claim._heartbeat.start()
    else:  # memory:// and friends live in one process: an existence check is all there is
        if storage.exists(claim.path):
            raise OutputBusy(_describe(out, storage.read_text(claim.path)))
        storage.write_text(claim.path, json.dumps(record))
    return claim


def _acquire_local(folder: str, claim: OutputClaim) -> int:
    """Link a locked temp file to the claim name (atomic create-if-absent); return its fd."""
    import fcntl

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, CLAIM_NAME)
    for _ in range(3):  # a stale claim taken over, or one released meanwhile: try again
        fd, temp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
        try:
            # Locked before it has the claim name: no other run can see it unlocked.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, json.dumps(claim.record).encode())
            os.fsync(fd)
            os.link(temp, path)
            return fd
        except FileExistsError:
            os.close(fd)
            _remove_if_stale_local(path, claim.out)
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(temp)
    raise OutputBusy(f"could not claim {claim.out}: other runs keep claiming it; try again")


def _remove_if_stale_local(path: str, out: str) -> None:
    """Remove the claim at `path` if its holder is dead (its lock is free); else OutputBusy."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return  # released meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusy(
                _describe(out, os.pread(fd, 4096, 0).decode(errors="replace"))
            ) from None
        # We hold the dead claim's lock, so no one else can remove it; remove it only if the
        # name still points at this very file (its owner may have released it meanwhile).
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                log.warning("taking over %s from a run that died", out)
                os.unlink(path)
    finally:
        os.close(fd)


def _acquire_gcs(claim: OutputClaim) -> int:
    """Create the claim object if absent (generation 0 precondition); return its generation."""
    data = json.dumps(claim.record).encode()
    for _ in range(3):
        existing = gcs.generation_of(claim.path)
        if existing is None:
            try:
                return gcs.write_if_generation(claim.path, data, 0)
            except FileExistsError:
                continue  # another run created it first: look at it again
        generation, updated, text = existing
        if time.time() - updated < STALE_S:
            raise OutputBusy(_describe(claim.out, text))
        log.warning("taking over %s: its claim has had no heartbeat since %s", claim.out, updated)
        gcs.delete_if_generation(claim.path, generation)
    raise OutputBusy(f"could not claim {claim.out}: other runs keep claiming it; try again")


def remove_stale_staging(claim: OutputClaim) -> None:
    """Delete staging folders of runs that no longer hold the claim (and their temp files)."""
    import fcntl

    with contextlib.suppress(FileNotFoundError):
        for name in storage.list_dirs(claim.out):
            if name.startswith(STAGING_PREFIX) and name != claim.staging.rsplit("/", 1)[-1]:
                log.info("removing %s of a run that died", name)
                storage.delete(storage.join(claim.out, name), recursive=True)
    if claim.fd is None:
        return
    folder = storage.filesystem(claim.out)[1]
    for name in os.listdir(folder):
        if name.startswith(TEMP_PREFIX):  # a claim attempt killed before it unlinked its file
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still live
                    os.unlink(os.path.join(folder, name))
                finally:
                    os.close(fd)


@contextlib.contextmanager
def claim_output(out: str) -> Iterator[OutputClaim]:
    """Hold `out` for the block: stale staging removed, this run's staging folder created."""
    claim = acquire(out)
    try:
        remove_stale_staging(claim)
        storage.makedirs(claim.staging)
        yield claim
    finally:
        claim.release()
