"""Pure decisions of the ingest step: label checks, deterministic splits, dataset hashing.

No Beam, no I/O: the pipeline in `pipeline.py` calls these per element, and tests hit them directly.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import asdict, dataclass

from components.common.dataset import SPLITS

HASH_SPACE = 16**16


@dataclass(frozen=True)
class IngestConfig:
    """Everything that decides what an ingested dataset contains (hashed into it)."""

    image_size: int = 224
    resize_mode: str = "pad"  # "pad" keeps the aspect ratio, "crop" centre-crops
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train, validation, test
    min_side: int = 8
    max_pixels: int = 100_000_000
    shards_per_split: int = 4
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.resize_mode not in ("pad", "crop"):
            raise ValueError(f"resize_mode must be 'pad' or 'crop', not {self.resize_mode!r}")
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios):
            raise ValueError(f"split_ratios needs three non-negative numbers: {self.split_ratios}")
        if abs(sum(self.split_ratios) - 1.0) > 1e-6:
            raise ValueError(f"split_ratios must sum to 1, got {sum(self.split_ratios)}")
        if self.image_size < 16:
            raise ValueError(f"image_size {self.image_size} is too small (minimum 16)")

    def as_dict(self) -> dict:
        """A JSON-ready copy for the manifest."""
        return asdict(self)


def validate_label(label: str) -> str:
    """Return the label if it is safe as a folder name and a class name, else raise ValueError."""
    problem = None
    if not label or not label.strip():
        problem = "it is empty"
    elif "/" in label or "\\" in label:
        problem = "it contains a path separator"
    elif label in (".", "..") or ".." in label:
        problem = "it contains '..'"
    elif any(unicodedata.category(ch).startswith("C") for ch in label):
        problem = "it contains control characters"
    if problem:
        raise ValueError(f"label {label!r} is not allowed: {problem}. Rename the folder or row.")
    return label


def assign_split(content_hash: str, ratios: tuple[float, float, float]) -> str:
    """Map a content hash to a split; stable, so adding images never moves existing ones."""
    position = int(content_hash[:16], 16) / HASH_SPACE
    cumulative = 0.0
    for split, ratio in zip(SPLITS, ratios, strict=True):
        cumulative += ratio
        if position < cumulative:
            return split
    return SPLITS[-1]


def record_digest(content_hash: str, label: str, split: str) -> int:
    """One accepted image's contribution to the order-independent dataset hash."""
    return int(hashlib.sha256(f"{content_hash}|{label}|{split}".encode()).hexdigest(), 16)


def combine_digests(digests_sum: int, labels: list[str], config: IngestConfig) -> str:
    """Fold the multiset sum of record digests with what shapes the pixels into one hash."""
    summary = f"{digests_sum % (1 << 256):064x}|{labels}|{config.image_size}|{config.resize_mode}"
    return hashlib.sha256(summary.encode()).hexdigest()


def pick_kept(uris: list[str]) -> str:
    """Choose deterministically which of several identical files is kept (the smallest URI)."""
    return min(uris)
