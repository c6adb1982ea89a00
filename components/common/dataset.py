"""The ingested-dataset contract: manifest.json plus TFRecord shards per split.

Ingest writes it, train and evaluate read it; this module is the one place that knows the
feature names and the manifest fields, so the three can never disagree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from components.common import storage

SCHEMA_VERSION = 1
SPLITS = ("train", "validation", "test")
MANIFEST_NAME = "manifest.json"

FEATURE_IMAGE = "image/encoded"
FEATURE_LABEL = "image/label"
FEATURE_HASH = "image/content_hash"
FEATURE_URI = "image/source_uri"


# Labels become folder names and parts of MLflow metric keys (`test_recall.<label>`; MLflow
# allows 250 characters): capped well below both so no later step fails on one.
MAX_LABEL_LENGTH = 100


class DatasetError(ValueError):
    """The dataset directory is missing, incomplete or inconsistent."""


def validate_label(label: object) -> str:
    """Return the label if it is safe as a folder name and a class name, else raise ValueError.

    Checked wherever labels enter: ingest (folder names, manifest rows) and every model load,
    because tag writes into `<root>/<label>/` folders.
    """
    problem = None
    if not isinstance(label, str):
        problem = f"it is a {type(label).__name__}, not a string"
    elif not label or not label.strip():
        problem = "it is empty"
    elif "/" in label or "\\" in label:
        problem = "it contains a path separator"
    elif label in (".", "..") or ".." in label:
        problem = "it contains '..'"
    elif any(unicodedata.category(ch).startswith("C") for ch in label):
        problem = "it contains control characters"
    elif len(label) > MAX_LABEL_LENGTH:
        problem = f"it is {len(label)} characters long (at most {MAX_LABEL_LENGTH})"
    if problem:
        shown = label[:40] + "..." if isinstance(label, str) and len(label) > 40 else label
        raise ValueError(f"label {shown!r} is not allowed: {problem}. Rename the folder or row.")
    return label


@dataclass
class Manifest:
    """What manifest.json says about an ingested dataset."""

    labels: list[str]
    image_size: int
    resize_mode: str
    source: str
    counts: dict[str, dict[str, int]]  # split -> label -> images
    shards: dict[str, list[str]]  # split -> shard file names
    dataset_hash: str
    totals: dict[str, int] = field(default_factory=dict)  # seen, accepted, rejected, duplicates
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. classes too small to split
    # corrections applied (ingest --corrections): files, decisions, from_review, changed,
    # excluded, added; empty when none were given
    review: dict[str, Any] = field(default_factory=dict)
    records_digest: str | None = None  # hex sum of the per-image digests (checks the hash)
    schema_version: int = SCHEMA_VERSION

    def split_size(self, split: str) -> int:
        """Number of images in one split."""
        return sum(self.counts.get(split, {}).values())

    def to_json(self) -> str:
        """Serialise with stable key order (the file is diffed and hashed by people)."""
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def read_manifest(dataset_dir: str) -> Manifest:
    """Load and check a dataset's manifest; a missing one means the dataset is not complete."""
    path = storage.join(dataset_dir, MANIFEST_NAME)
    if not storage.exists(path):
        raise DatasetError(
            f"{dataset_dir} is not a complete gallerytag dataset: {MANIFEST_NAME} is missing. "
            f"Run `gallerytag ingest SOURCE --out {dataset_dir}` (again) to create it."
        )
    try:
        raw = json.loads(storage.read_text(path))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON ({error}); re-ingest the source") from None
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{path} holds a JSON {type(raw).__name__}, not a manifest object; re-ingest the source"
        )
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(
            f"{path} has schema_version {raw.get('schema_version')!r}; this gallerytag reads "
            f"{SCHEMA_VERSION}. Re-ingest the source with this version."
        )
    known = {f.name for f in dataclasses.fields(Manifest)}
    required = {f.name for f in dataclasses.fields(Manifest) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}  # fmt: skip
    unknown, missing = sorted(set(raw) - known), sorted(required - set(raw))
    if unknown or missing:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise DatasetError(
            f"{path} is not a manifest this gallerytag wrote ({'; '.join(parts)}); it may have "
            "been edited by hand: re-ingest the source"
        )
    manifest = Manifest(**raw)
    if manifest.records_digest is not None:  # manifests written before it existed: unchecked
        expected = compute_dataset_hash(
            int(manifest.records_digest, 16),
            manifest.labels,
            manifest.image_size,
            manifest.resize_mode,
        )
        if expected != manifest.dataset_hash:
            raise DatasetError(
                f"{path} does not match its dataset_hash: its labels (order included), image "
                "size or resize mode were edited; re-ingest the source instead"
            )
    return manifest


def compute_dataset_hash(
    records_digest: int, labels: list[str], image_size: int, resize_mode: str
) -> str:
    """The dataset hash: the multiset sum of per-image digests folded with what shapes the
    pixels and the label ids (the label list, in order)."""
    summary = f"{records_digest % (1 << 256):064x}|{labels}|{image_size}|{resize_mode}"
    return hashlib.sha256(summary.encode()).hexdigest()


def shard_paths(dataset_dir: str, manifest: Manifest, split: str) -> list[str]:
    """Full paths of one split's shards, checking that each one is really there."""
    paths = [storage.join(dataset_dir, name) for name in manifest.shards.get(split, [])]
    missing = [p for p in paths if not storage.exists(p)]
    if missing:
        raise DatasetError(f"{dataset_dir}: shard(s) listed in the manifest are missing: {missing}")
    return paths


def count_records(url: str) -> int:
    """Number of records in one TFRecord file, from its framing alone (8-byte length, 4-byte
    CRC, data, 4-byte CRC; no TensorFlow); a file cut short is an error."""
    records = 0
    with storage.open_file(url, "rb") as stream:
        while header := stream.read(12):
            if len(header) < 12:
                raise DatasetError(f"{url} is cut short inside record {records}")
            (length,) = struct.unpack("<Q", header[:8])
            end = stream.seek(length + 4, 1)
            if end > stream.size:
                raise DatasetError(f"{url} is cut short inside record {records}")
            records += 1
    return records
