"""The scratch pack files of an ingest run: each bundle appends its re-encoded JPEGs to one
pack and their metadata rows to the pack's index, so no pixel crosses a shuffle."""

from __future__ import annotations

import json
import logging
import uuid

from components.common import storage

log = logging.getLogger(__name__)
PIXELS = "_pixels"  # staged JPEGs + metadata rows, one pack per bundle (never published)


class PackWriter:
    """Appends staged JPEGs to one new scratch file and their metadata rows to an index.

    One pack per bundle instead of one file per image: no create/rename per image locally,
    and a few GCS requests per bundle instead of per image. A retried bundle writes a new
    pack, so no reader ever sees a half-written one (packs are read after the combine that
    names them, which only counts committed bundles).
    """

    def __init__(self, staging: str) -> None:
        self.name = f"{uuid.uuid4().hex}.pack"
        self._pixels = storage.open_file(pack_path(staging, self.name), "wb")
        self._index = storage.open_file(index_path(staging, self.name), "wb")
        self._offset = 0
        self._rows = 0

    def append(self, data: bytes, metadata: dict) -> int:
        """Write `data` and its metadata row; return the row number."""
        self._pixels.write(data)
        row = {**metadata, "offset": self._offset, "length": len(data)}
        self._index.write(json.dumps(row).encode() + b"\n")
        self._offset += len(data)
        self._rows += 1
        return self._rows - 1

    def close(self) -> None:
        """Finish both files (on GCS: complete the uploads)."""
        self._pixels.close()
        self._index.close()

    def abandon(self) -> None:
        """Drop the file handles after a failure, without raising a second error."""
        for stream in (self._pixels, self._index):
            try:
                stream.close()
            except Exception as error:  # the staging folder is removed with the failed run
                log.debug("pack %s not closed cleanly: %s", self.name, error)


def pack_path(staging: str, name: str) -> str:
    """Where Inspect's pack files live until the shards are written."""
    return storage.join(staging, PIXELS, name)


def index_path(staging: str, name: str) -> str:
    """The metadata rows of a pack: one JSON line per image, in pack order."""
    return storage.join(staging, PIXELS, name + ".index")
