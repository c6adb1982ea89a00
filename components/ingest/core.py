"""Pure decisions of the ingest step: label checks, deterministic splits, dataset hashing.

No Beam, no I/O: the pipeline in `pipeline.py` calls these per element, and tests hit them directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from components.common.dataset import (  # noqa: F401 (validate_label: ingest's API)
    SPLITS,
    compute_dataset_hash,
    validate_label,
)
from components.common.settings import setting

PHASH_SIZE = 16  # 16x16 DCT bits = 256-bit hash: distinct photos sit ~50+ bits apart
PHASH_INPUT_SIZE = PHASH_SIZE * 4  # the grey square the DCT runs on (imagehash's default)
PHASH_BYTES = PHASH_SIZE * PHASH_SIZE // 8


@dataclass(frozen=True)
class IngestConfig:
    """Everything that decides what an ingested dataset contains (hashed into it)."""

    image_size: int = setting(224, "Side of the square images written.", minimum=16)
    resize_mode: str = setting(
        "pad", "pad: keep the aspect ratio and pad; crop: centre-crop.", choices=("pad", "crop")
    )
    split_ratios: tuple[float, float, float] = setting(
        (0.7, 0.1, 0.2),
        "train/validation/test ratios (70/10/20 or 0.7,0.1,0.2), applied within each label "
        "(stratified).",
        aliases=("--split",),
    )
    min_side: int = setting(8, "Reject images smaller than this (pixels).", minimum=1)
    max_pixels: int = setting(
        100_000_000, "Reject images with more pixels (decompression bombs).", minimum=1
    )
    shards_per_split: int = setting(
        0,
        "TFRecord shards per split; 0 lets the runner choose (no shuffle of pixels, memory "
        "stays flat).",
        aliases=("--shards",),
        minimum=0,
    )
    jpeg_quality: int = setting(95, "JPEG quality of the re-encoded images.", minimum=1)
    near_duplicate_distance: int = setting(
        10,
        "Max differing bits (of 256) of the perceptual hash for near-duplicates; -1 = off.",
        minimum=-1,
    )
    small_class_policy: str = setting(
        "warn", "What to do when a label gets no image in some split.", choices=("warn", "error")
    )
    split_seed: int = setting(
        0, "Another seed draws another stratified split of the same images.", minimum=0
    )

    def __post_init__(self) -> None:
        if self.resize_mode not in ("pad", "crop"):
            raise ValueError(f"resize_mode must be 'pad' or 'crop', not {self.resize_mode!r}")
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios):
            raise ValueError(f"split_ratios needs three non-negative numbers: {self.split_ratios}")
        if abs(sum(self.split_ratios) - 1.0) > 1e-6:
            raise ValueError(f"split_ratios must sum to 1, got {sum(self.split_ratios)}")
        if self.small_class_policy not in ("warn", "error"):
            raise ValueError("small_class_policy must be 'warn' or 'error'")
        if not -1 <= self.near_duplicate_distance < PHASH_SIZE * PHASH_SIZE // 4:
            raise ValueError(
                f"near_duplicate_distance {self.near_duplicate_distance} is out of range"
            )
        if self.image_size < 16:
            raise ValueError(f"image_size {self.image_size} is too small (minimum 16)")

    def as_dict(self) -> dict:
        """A JSON-ready copy for the manifest."""
        return asdict(self)


def split_key(content_hash: str, seed: int = 0) -> int:
    """An image's place in its label's split order: its hash, re-hashed for seed != 0."""
    if seed:
        content_hash = hashlib.sha256(f"{seed}:{content_hash}".encode()).hexdigest()
    return int(content_hash[:16], 16)


def split_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of a label's `n` images go to train, validation and test.

    Largest remainder, so the counts add up to n; then every split with a positive ratio
    gets at least one image when the label has enough for all of them, taken from the
    largest split (5 images at 70/10/20 give 3/1/1, not 4/0/1).
    """
    exact = [n * ratio for ratio in ratios]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(3), key=lambda i: (-round(exact[i] - counts[i], 9), i))
    for index in by_remainder[: n - sum(counts)]:
        counts[index] += 1
    wanted = [i for i in range(3) if ratios[i] > 0]
    if n >= len(wanted):
        for index in wanted:
            if counts[index] == 0:
                counts[max(range(3), key=lambda i: counts[i])] -= 1
                counts[index] = 1
    return counts[0], counts[1], counts[2]


def split_bounds(
    keys_by_label: dict[str, Iterable[int]], ratios: tuple[float, float, float]
) -> dict[str, tuple[int, int]]:
    """Per label, the split keys where validation and test begin (stratified split).

    A label's images are ordered by split key and cut at the `split_counts` positions, so
    each label gets its share of every split. Deterministic, and stable under growth:
    adding one image to a label moves at most two of its other images between splits
    (the two cut points shift by at most one position each).
    """
    bounds = {}
    for label, keys in keys_by_label.items():
        ordered = sorted(keys)
        n_train, n_validation, _ = split_counts(len(ordered), ratios)
        cuts = (n_train, n_train + n_validation)
        bounds[label] = tuple(ordered[c] if c < len(ordered) else 1 << 64 for c in cuts)
    return bounds  # type: ignore[return-value]


def assign_split(key: int, bounds: tuple[int, int]) -> str:
    """The split of an image with split key `key` in a label cut at `bounds`."""
    if key < bounds[0]:
        return SPLITS[0]
    return SPLITS[1] if key < bounds[1] else SPLITS[2]


def record_digest(content_hash: str, label: str, split: str) -> int:
    """One accepted image's contribution to the order-independent dataset hash."""
    return int(hashlib.sha256(f"{content_hash}|{label}|{split}".encode()).hexdigest(), 16)


def combine_digests(digests_sum: int, labels: list[str], config: IngestConfig) -> str:
    """Fold the multiset sum of record digests with what shapes the pixels into one hash."""
    return compute_dataset_hash(digests_sum, labels, config.image_size, config.resize_mode)


def perceptual_hash(image: Image.Image) -> int:
    """A 256-bit DCT perceptual hash that survives resizing and recompression."""
    # imagehash would reduce to 64x64 grey with Lanczos; Pillow's (antialiased) bilinear
    # filter halves the cost of the whole hash and keeps re-encoded, resized copies as close
    # (a plain box filter did not: 16 bits apart instead of 2 for a 400 px vs 300 px copy).
    grey = image.convert("L").resize((PHASH_INPUT_SIZE,) * 2, Image.Resampling.BILINEAR)
    bits = imagehash.phash(grey, hash_size=PHASH_SIZE).hash  # row-major, as str(ImageHash)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def phash_bytes(value: int) -> bytes:
    """One perceptual hash as PHASH_BYTES big-endian bytes: a row of `pack_hashes`."""
    return value.to_bytes(PHASH_BYTES, "big")


def pack_hashes(hashes: Iterable[int]) -> np.ndarray:
    """Perceptual hashes as rows of 32 big-endian bytes, the form `close_pairs` compares."""
    data = b"".join(phash_bytes(value) for value in hashes)
    return np.frombuffer(data, np.uint8).reshape(-1, PHASH_BYTES)


def close_pairs(packed: np.ndarray, max_distance: int) -> np.ndarray:
    """Index pairs (i, j), i < j, of packed perceptual hashes (rows of `pack_hashes`) that
    differ in <= max_distance bits, as an (m, 2) array sorted by row.

    The hashes are cut into max_distance + 1 bands: two hashes that close agree exactly on
    at least one band (pigeonhole), so only hashes sharing a band value are compared.
    Vectorised, 32 bytes per image: no per-(image, band) records to shuffle.
    """
    found = np.empty((0, 2), np.int64)
    if len(packed) < 2:
        return found
    bits = packed.shape[1] * 8
    bands = max_distance + 1
    for band in range(bands):
        low, high = band * bits // bands, (band + 1) * bits // bands
        # Unpack only the bytes this band touches: n x 256 bits would be 256 bytes per image.
        first_byte = low // 8
        unpacked = np.unpackbits(packed[:, first_byte : (high + 7) // 8], axis=1)
        band_values = np.packbits(unpacked[:, low - 8 * first_byte : high - 8 * first_byte], axis=1)
        bucket = np.unique(band_values, axis=0, return_inverse=True)[1].ravel()
        order = np.argsort(bucket, kind="stable")  # stable: indices ascend within a bucket
        sorted_bucket = bucket[order]
        # Compare each image with the one `step` places later in bucket order, for growing
        # steps: all pairs within buckets, vectorised. Positions still sharing a bucket at
        # `step` are the only candidates at step + 1.
        starts = np.arange(len(order) - 1)
        step = 1
        while True:
            starts = starts[starts + step < len(order)]
            starts = starts[sorted_bucket[starts] == sorted_bucket[starts + step]]
            if not len(starts):
                break
            first, second = order[starts], order[starts + step]
            distance = np.bitwise_count(packed[first] ^ packed[second]).sum(axis=1)
            close = distance <= max_distance
            found = np.concatenate([found, np.column_stack([first[close], second[close]])])
            step += 1
        found = np.unique(found, axis=0)
    return found


@dataclass(frozen=True, slots=True)
class Duplicate:
    """One image that is not kept: the kept image it copies, how they matched, and whether
    the group carries more than one label (a label conflict)."""

    index: int
    kept: int
    kind: str  # "exact" (same bytes) or "near" (perceptual hash within the distance)
    label_conflict: bool


def find_duplicates(
    uris: Sequence[str],
    labels: Sequence[str],
    content_hashes: np.ndarray,
    phashes: np.ndarray,
    max_distance: int,
) -> list[Duplicate]:
    """Every image to drop, by index: one kept per group of equal content hashes (rows of
    raw digest bytes), then one per group of near-identical perceptual hashes (rows of
    `pack_hashes`) among those kept; max_distance < 0 skips the second step.

    Groups are connected components (a ~ b ~ c is one group); the kept image is the group's
    smallest (URI, label), so the choice does not depend on processing order.
    """
    duplicates: list[Duplicate] = []

    def keep_one(members: Iterable[int], kind: str) -> int:
        members = [int(i) for i in members]
        kept = min(members, key=lambda i: (uris[i], labels[i]))
        conflict = len({labels[i] for i in members}) > 1
        duplicates.extend(Duplicate(i, kept, kind, conflict) for i in members if i != kept)
        return kept

    survivors = np.ones(len(uris), bool)
    if len(uris):
        group_of = np.unique(content_hashes, axis=0, return_inverse=True)[1].ravel()
        for members in groups_of_several(group_of):
            survivors[members] = False
            survivors[keep_one(members, "exact")] = True
    kept_positions = np.flatnonzero(survivors)
    if max_distance >= 0 and len(kept_positions) > 1:
        pairs = close_pairs(phashes[kept_positions], max_distance)
        if len(pairs):
            size = len(kept_positions)
            graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), (size, size))
            component = connected_components(graph, directed=False)[1]
            for members in groups_of_several(component):
                keep_one(kept_positions[members], "near")
    return sorted(duplicates, key=lambda duplicate: duplicate.index)


def groups_of_several(group_of: np.ndarray) -> Iterable[np.ndarray]:
    """The index arrays of the groups (equal values of `group_of`) with two or more members."""
    order = np.argsort(group_of, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(group_of[order])) + 1):
        if len(members) > 1:
            yield members


def small_classes(
    counts: dict[str, dict[str, int]], labels: list[str], ratios: tuple[float, float, float]
) -> list[str]:
    """Human-readable problems: labels that got no image in a split that should have some."""
    problems = []
    for label in labels:
        empty = [
            split
            for split, ratio in zip(SPLITS, ratios, strict=True)
            if ratio > 0 and counts.get(split, {}).get(label, 0) == 0
        ]
        if empty:
            total = sum(counts.get(split, {}).get(label, 0) for split in SPLITS)
            problems.append(
                f"label {label!r} has {total} image(s) and none in {', '.join(empty)}; "
                "add images or set split ratios / a manifest split column"
            )
    return problems
