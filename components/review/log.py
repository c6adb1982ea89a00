"""The review page's side of `corrections.jsonl`: durable appends under a file lock.

Every decision is one line appended with O_APPEND, flushed and fsync'ed before the page hears
"saved", so a crash or a restart loses nothing that was acknowledged. An exclusive `flock` on
the file spans read-check-append: two tabs, or two `gallerytag review` processes on one
folder, can neither interleave bytes nor both decide the same image (the second gets a
conflict naming who decided first).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from components.common import corrections


class AlreadyDecided(Exception):
    """Someone (another tab or process) decided this image first."""

    def __init__(self, row: dict) -> None:
        super().__init__(
            f"{row.get('uri')} was already decided ({row['decision']} {row.get('label')!r}) "
            f"by {row.get('reviewer')} at {row.get('time')}"
        )
        self.row = row


class NotDecided(Exception):
    """An undo for an image that has no decision in force."""


class CorrectionsLog:
    """Append-only decisions file on local disk, with the decisions in force kept in memory
    and refreshed from the file (other writers) under the lock."""

    def __init__(self, path: str) -> None:
        if "://" in path and not path.startswith("file://"):
            raise ValueError(
                f"corrections log {path}: the review page appends with fsync and a file lock, "
                "which object storage does not offer; pass --corrections LOCAL_PATH and copy "
                "the file next to the run afterwards (e.g. gcloud storage cp)"
            )
        self.path = path.removeprefix("file://")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._threads = threading.Lock()  # flock is per open file; this orders our own threads
        self._offset = 0
        self._rows: list[dict] = []
        with self._locked():
            pass

    @contextmanager
    def _locked(self) -> Iterator[int]:
        with self._threads:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._catch_up(fd)
                yield fd
            finally:
                os.close(fd)  # closing releases the lock

    def _catch_up(self, fd: int) -> None:
        """Read what other writers appended since we last looked."""
        size = os.fstat(fd).st_size
        if size <= self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line (crash) is not a row
        self._rows += corrections.parse_lines(complete.decode("utf-8"), self.path)
        self._offset += len(complete)

    def _append(self, fd: int, row: dict) -> None:
        line = (json.dumps(row, sort_keys=True) + "\n").encode("utf-8")
        os.write(fd, line)  # one write of one line with O_APPEND: never interleaved
        os.fsync(fd)
        self._rows.append(row)
        self._offset = os.fstat(fd).st_size

    def state(self) -> dict[str, dict]:
        """uri -> decision in force, including other processes' latest writes."""
        with self._locked():
            return corrections.latest_by_uri(self._rows)

    def decide(self, row: dict) -> dict:
        """Append a decision unless the image already has one in force."""
        row = corrections.check_row(
            {"schema_version": corrections.SCHEMA_VERSION, "time": now(), **row}, "decision"
        )
        with self._locked() as fd:
            current = corrections.latest_by_uri(self._rows).get(row["uri"])
            if current is not None:
                raise AlreadyDecided(current)
            self._append(fd, row)
        return row

    def undo(self, uri: str, reviewer: str) -> dict:
        """Cancel the decision in force for `uri` (the undone row is returned)."""
        with self._locked() as fd:
            current = corrections.latest_by_uri(self._rows).get(uri)
            if current is None:
                raise NotDecided(f"{uri} has no decision to undo")
            row = {
                "schema_version": corrections.SCHEMA_VERSION,
                "uri": uri,
                "content_hash": current.get("content_hash"),
                "decision": "undo",
                "label": None,
                "reviewer": reviewer,
                "time": now(),
            }
            self._append(fd, row)
        return current


def now() -> str:
    """UTC time of a decision, ISO 8601 to the millisecond."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
