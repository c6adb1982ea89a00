"""The dedupe plan: a combine of compact per-image fingerprints (content hash, perceptual
hash, label) that finds exact and near duplicates and the split of every kept image."""

from __future__ import annotations

import pickle
import sys
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np

from components.ingest.core import (
    PHASH_BYTES,
    Duplicate,
    find_duplicates,
    phash_bytes,
    split_bounds,
    split_key,
)


class Fingerprints:
    """What deduplication needs of every accepted image, in compact columns.

    ~50 bytes per image once compressed (random digests most of it): the runner only moves
    these accumulators between workers, in several copies at once, so they stay compressed
    until a worker adds to or reads them. An image is named by its pack and row, never by
    URI: a manifest may list one URI twice.
    """

    def __init__(self) -> None:
        self.packs: list[str] = []  # images refer to their pack by position in this list
        self.pack_ids = array("l")
        self.rows = array("l")
        self.uris: list[str] = []
        self.labels: list[str] = []  # interned: pickle stores each label once
        self.content_hashes = bytearray()  # 32 raw SHA-256 bytes per image
        self.phashes = bytearray()  # 32 bytes per image (core.pack_hashes rows)
        self._compressed: bytes | None = None

    def __getstate__(self) -> bytes:
        if self._compressed is None:
            columns = {k: v for k, v in vars(self).items() if k != "_compressed"}
            return zlib.compress(pickle.dumps(columns, pickle.HIGHEST_PROTOCOL), 1)
        return self._compressed

    def __setstate__(self, state: bytes) -> None:
        self._compressed = state

    def _expand(self) -> Fingerprints:
        if self._compressed is not None:
            vars(self).update(pickle.loads(zlib.decompress(self._compressed)))
            self._compressed = None
        return self

    def add(self, fingerprint: tuple[str, int, str, str, str, int]) -> None:
        """Append one image's (pack, row, uri, label, content hash, perceptual hash)."""
        pack, row, uri, label, content_hash, phash = fingerprint
        self._expand()
        if not self.packs or self.packs[-1] != pack:
            # A bundle's images arrive together, so this stays about one entry per pack;
            # interleaved packs only repeat names, which is still correct.
            self.packs.append(pack)
        self.pack_ids.append(len(self.packs) - 1)
        self.rows.append(row)
        self.uris.append(uri)
        self.labels.append(sys.intern(label))
        self.content_hashes += bytes.fromhex(content_hash)
        self.phashes += phash_bytes(phash)

    def extend(self, other: Fingerprints) -> None:
        """Append all of another accumulator's images."""
        self._expand()
        other._expand()
        offset = len(self.packs)
        self.packs += other.packs
        self.pack_ids.extend(pack_id + offset for pack_id in other.pack_ids)
        self.rows.extend(other.rows)
        self.uris += other.uris
        self.labels += [sys.intern(label) for label in other.labels]
        self.content_hashes += other.content_hashes
        self.phashes += other.phashes

    def split_keys(self, skip: set[int], seed: int) -> dict[str, list[int]]:
        """Label -> split keys (core.split_key) of the images not in `skip`."""
        self._expand()
        keys: dict[str, list[int]] = {}
        for index, label in enumerate(self.labels):
            if index not in skip:
                content_hash = self.content_hashes[32 * index : 32 * index + 32].hex()
                keys.setdefault(label, []).append(split_key(content_hash, seed))
        return keys

    def duplicates(self, max_distance: int) -> list[Duplicate]:
        """core.find_duplicates over these images."""
        self._expand()
        content_hashes = np.frombuffer(self.content_hashes, np.uint8).reshape(-1, 32)
        phashes = np.frombuffer(self.phashes, np.uint8).reshape(-1, PHASH_BYTES)
        return find_duplicates(self.uris, self.labels, content_hashes, phashes, max_distance)


@dataclass(frozen=True)
class DedupePlan:
    """Which staged images not to write, and the duplicates.jsonl rows saying why."""

    packs: list[str] = field(default_factory=list)  # every pack holding accepted images
    dropped: dict[str, frozenset[int]] = field(default_factory=dict)  # pack -> rows to skip
    # (uri, label, kept uri, kept label, kind, label conflict) per dropped image; tuples
    # share the accumulator's strings, so even a gallery of copies stays small here.
    duplicates: list[tuple[str, str, str, str, str, bool]] = field(default_factory=list)
    # label -> split keys where validation and test begin (core.split_bounds): the
    # stratified split of the kept images, two integers per label for any dataset size.
    split_bounds: dict[str, tuple[int, int]] = field(default_factory=dict)


class PlanDeduplicationFn(beam.CombineFn):
    """Gather every accepted image's fingerprint, then decide exact and near duplicates.

    One combine instead of a shuffle of per-image records: the runner pre-aggregates it in
    each worker, so only one compact accumulator per bundle crosses to the runner.
    """

    def __init__(
        self, max_distance: int, split_ratios: tuple[float, float, float], split_seed: int
    ) -> None:
        self.max_distance = max_distance
        self.split_ratios = split_ratios
        self.split_seed = split_seed

    def create_accumulator(self) -> Fingerprints:
        """Start empty."""
        return Fingerprints()

    def add_input(self, accumulator: Fingerprints, fingerprint: tuple) -> Fingerprints:
        """Remember one image."""
        accumulator.add(fingerprint)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Fingerprints]) -> Fingerprints:
        """Concatenate partial columns into the first (Beam allows changing it in place)."""
        accumulators = iter(accumulators)
        merged = next(accumulators, None) or Fingerprints()
        for accumulator in accumulators:
            merged.extend(accumulator)
        return merged

    def extract_output(self, images: Fingerprints) -> DedupePlan:
        """The plan: rows to skip per pack, one duplicates row per dropped image, and
        where each label's kept images are cut into splits."""
        found = images.duplicates(self.max_distance)
        dropped_images = {duplicate.index for duplicate in found}
        dropped: dict[str, set[int]] = {}
        duplicates = []
        for duplicate in found:
            index, kept = duplicate.index, duplicate.kept
            pack = images.packs[images.pack_ids[index]]
            dropped.setdefault(pack, set()).add(images.rows[index])
            duplicates.append(
                (
                    images.uris[index],
                    images.labels[index],
                    images.uris[kept],
                    images.labels[kept],
                    duplicate.kind,
                    duplicate.label_conflict,
                )
            )
        return DedupePlan(
            packs=sorted(set(images.packs)),
            dropped={pack: frozenset(rows) for pack, rows in dropped.items()},
            duplicates=duplicates,
            split_bounds=split_bounds(
                images.split_keys(dropped_images, self.split_seed), self.split_ratios
            ),
        )
