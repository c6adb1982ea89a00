"""Tags written back to storage beside the row files: label folders and gs:// metadata."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from components.common import gcs, storage
from components.tag.config import NAMESPACE


class CopyToLabelFolder(beam.DoFn):
    """Copy a tagged image into <root>/<label>/ (or <root>/_review/<label>/)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def process(self, row: dict) -> Iterator[dict]:
        """Copy, naming the file by content hash + original name so names never collide."""
        folder = row["top1"] if row["status"] == "auto" else f"_review/{row['top1']}"
        name = f"{row['content_hash'][:12]}_{row['uri'].rsplit('/', 1)[-1]}"
        target = storage.join(self.root, folder, name)
        if not storage.is_within(self.root, target):
            raise ValueError(f"refusing to copy {row['uri']} to {target}: outside {self.root}")
        storage.copy(row["uri"], target)
        yield row


class WriteObjectMetadata(beam.DoFn):
    """Merge the tag into the gs:// object's custom metadata, keeping every other key."""

    def process(self, row: dict) -> Iterator[dict]:
        """Idempotent: the same tags merged twice leave the object unchanged."""
        gcs.merge_metadata(row["uri"], metadata_for(row))
        Metrics.counter(NAMESPACE, "metadata_written").inc()
        yield row


def metadata_for(row: dict) -> dict[str, str]:
    """The custom-metadata keys gallerytag owns on a tagged object."""
    return {
        "gallerytag-label": row["top1"],
        "gallerytag-score": f"{row['score']:.4f}",
        "gallerytag-status": row["status"],
        "gallerytag-model": row["model"],
        "gallerytag-model-version": row["model_version"] or "",
    }
