"""The Beam steps of ingest: list the source, inspect each file once (decode, resize, pack),
write duplicates, summarise, and turn each pack's kept images into TFRecord examples."""

from __future__ import annotations

import itertools
import json
import logging
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from components.common import dataset, storage
from components.common.corrections import Corrections
from components.common.images import (
    DecodeLimits,
    ImageRejected,
    decode_image,
    encode_jpeg,
    fit_image,
)
from components.common.images import content_hash as hash_bytes
from components.common.tfexample import serialize_example
from components.ingest.core import (
    PHASH_INPUT_SIZE,
    IngestConfig,
    assign_split,
    perceptual_hash,
    record_digest,
    split_key,
)
from components.ingest.dedupe import DedupePlan
from components.ingest.packs import PackWriter, index_path, pack_path
from components.ingest.sources import Source, SourceItem

log = logging.getLogger(__name__)
NAMESPACE = "gallerytag.ingest"
LATE = "_late.jsonl"


class ListSource(beam.DoFn):
    """Expand one partition of the source into batches of (uri, label, split) items, each
    batch one compressed JSON document.

    The listing is shuffled to spread the images over the workers, and the local runner
    holds a shuffle in memory, in several copies while it sends it on: ~20 bytes per item
    this way, ~450 as one element per item.
    """

    BATCH = 256

    def __init__(self, source: Source) -> None:
        self.source = source

    def process(self, partition: str) -> Iterator[bytes]:
        """Yield the partition's items, BATCH at a time."""
        items = iter(self.source.items(partition))
        while batch := list(itertools.islice(items, self.BATCH)):
            Metrics.counter(NAMESPACE, "listed").inc(len(batch))  # the live progress's total
            yield zlib.compress(json.dumps(batch).encode(), 1)


def unbatch(batch: bytes) -> Iterator[SourceItem]:
    """The (uri, label, split) items of one ListSource batch."""
    yield from (tuple(item) for item in json.loads(zlib.decompress(batch)))


class Inspect(beam.DoFn):
    """Read one file, validate it by content, fingerprint it and append its final pixels and
    metadata to the bundle's pack; rejects go to a tagged output.

    Only a fingerprint leaves this step, and it goes straight into a combine that the
    runner pre-aggregates in this worker. Each image is decoded once, at the reduced JPEG
    scale the target size needs; the resized, re-encoded JPEG waits in the pack until the
    kept ones are written to shards.
    """

    REJECTED = "rejected"
    REVIEWED = "reviewed"  # ("review/<effect>", 1) per image a correction decided

    def __init__(
        self, config: IngestConfig, staging: str, corrections: Corrections | None = None
    ) -> None:
        self.config = config
        self.staging = staging
        self.corrections = corrections or Corrections()
        self.seen = Metrics.counter(NAMESPACE, "seen")
        self.accepted = Metrics.counter(NAMESPACE, "decoded")
        self._pack: PackWriter | None = None

    def start_bundle(self) -> None:
        """A bundle's images go to a pack of its own, opened on its first usable image."""
        self._pack = None

    def finish_bundle(self) -> None:
        """Close the pack: Beam commits the bundle's outputs only after this returns."""
        if self._pack is not None:
            self._pack.close()
            self._pack = None

    def teardown(self) -> None:
        """A failed bundle's pack is left for the staging clean-up."""
        if self._pack is not None:
            self._pack.abandon()

    def process(self, element: SourceItem) -> Iterator:
        """Emit the fingerprint (pack, row, uri, label, content hash, perceptual hash) of a
        usable image, or a rejection row."""
        uri, label, split = element
        self.seen.inc()
        if not label and not self.corrections:
            yield self._reject(uri, label, "not_in_label_folder", "put it in <source>/<label>/")
            return
        try:
            data = storage.read_bytes(uri)
        except Exception as error:  # a vanished or unreadable object is a rejection, not a crash
            yield self._reject(uri, label, "unreadable_file", str(error))
            return
        content_hash = hash_bytes(data)
        decision = self.corrections.lookup(uri, content_hash) if self.corrections else None
        if decision is not None:
            # The reviewer's decision wins over the folder or manifest label.
            if decision.label is None:
                yield beam.pvalue.TaggedOutput(self.REVIEWED, ("review/excluded", 1))
                detail = f"excluded in review ({decision.origin})"
                yield self._reject(uri, label, "rejected_in_review", detail)
                return
            yield beam.pvalue.TaggedOutput(self.REVIEWED, ("review/from_review", 1))
            if decision.label != label:
                yield beam.pvalue.TaggedOutput(self.REVIEWED, ("review/changed", 1))
            label = decision.label
        if not label:
            yield self._reject(uri, label, "not_in_label_folder", "put it in <source>/<label>/")
            return
        target = (self.config.image_size, self.config.resize_mode)
        try:
            limits = DecodeLimits(self.config.min_side, self.config.max_pixels)
            # The whole entropy-coded stream is still decoded (truncation is caught), at the
            # smallest DCT scale that covers the target size and the perceptual hash's input.
            image = decode_image(data, limits, target, keep_short_side=PHASH_INPUT_SIZE)
        except ImageRejected as rejection:
            yield self._reject(uri, label, rejection.reason, rejection.detail)
            return
        pixels = encode_jpeg(fit_image(image, *target), self.config.jpeg_quality)
        if self._pack is None:
            self._pack = PackWriter(self.staging)
        # split is None unless the manifest fixed it
        row = self._pack.append(
            pixels, {"uri": uri, "label": label, "hash": content_hash, "split": split}
        )
        self.accepted.inc()
        yield self._pack.name, row, uri, label, content_hash, perceptual_hash(image)

    def _reject(self, uri: str, label: str, reason: str, detail: str) -> beam.pvalue.TaggedOutput:
        Metrics.counter(NAMESPACE, f"rejected_{reason}").inc()
        row = {"uri": uri, "label": label, "reason": reason, "detail": detail}
        return beam.pvalue.TaggedOutput(self.REJECTED, row)


class WriteDuplicates(beam.DoFn):
    """Write duplicates.jsonl straight from the plan, one streamed row per dropped image.

    The plan is one element in one worker already; a one-shard Beam text sink would instead
    group every row in the runner's memory (a gallery of copies has one per image).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, plan: DedupePlan) -> Iterator[tuple[str, int]]:
        """Write the file (a retry rewrites it whole); emit the count per kind."""
        counts = {"exact": 0, "near": 0}
        with storage.open_file(self.path, "wb") as stream:
            for uri, label, kept_uri, kept_label, kind, conflict in plan.duplicates:
                row = {
                    "uri": uri,
                    "label": label,
                    "kept_uri": kept_uri,
                    "kept_label": kept_label,
                    "kind": kind,
                    "label_conflict": conflict,
                }
                stream.write(json.dumps(row, sort_keys=True).encode() + b"\n")
                counts[kind] += 1
        for kind, count in counts.items():
            Metrics.counter(NAMESPACE, f"duplicates_{kind}").inc(count)
        yield "duplicates", sum(counts.values())


class SummariseFn(beam.CombineFn):
    """Counts per split and label plus the order-independent dataset digest, in O(labels) memory."""

    def create_accumulator(self) -> tuple[dict, int]:
        """Start empty."""
        return {}, 0

    def add_input(self, accumulator: tuple[dict, int], record: dict) -> tuple[dict, int]:
        """Count one record."""
        counts, digest = accumulator
        key = f"{record['split']}/{record['label']}"
        counts[key] = counts.get(key, 0) + 1
        return counts, digest + record_digest(record["hash"], record["label"], record["split"])

    def merge_accumulators(self, accumulators: Iterable[tuple[dict, int]]) -> tuple[dict, int]:
        """Add partial counts."""
        merged: dict[str, int] = {}
        total = 0
        for counts, digest in accumulators:
            for key, value in counts.items():
                merged[key] = merged.get(key, 0) + value
            total += digest
        return merged, total

    def extract_output(self, accumulator: tuple[dict, int]) -> dict:
        """JSON-ready output."""
        counts, digest = accumulator
        return {"counts": counts, "digest": str(digest)}


class MakeExamples(beam.DoFn):
    """Serialise one pack's kept images as tf.train.Examples, each with its split."""

    KEPT = "kept"  # {hash, label, split} of each written image, for the counts
    LATE = "late"  # staged data that went missing: run() turns these into one clear error

    def __init__(self, staging: str, label_ids: dict[str, int], split_seed: int) -> None:
        self.staging = staging
        self.label_ids = label_ids
        self.split_seed = split_seed

    def process(
        self, pack: str, dropped: dict[str, frozenset[int]], bounds: dict[str, tuple[int, int]]
    ) -> Iterator:
        """Emit (split index, serialized example) per kept image of the pack, reading the
        pack front to back; a failure row if its staged data is gone or cut short."""
        skip = dropped.get(pack, frozenset())
        uri = None
        try:
            with (
                storage.open_file(index_path(self.staging, pack), "rb") as index,
                storage.open_file(pack_path(self.staging, pack), "rb") as pixels,
            ):
                for row_number, line in enumerate(index):
                    if row_number in skip:
                        continue
                    row = json.loads(line)
                    uri = row["uri"]
                    pixels.seek(row["offset"])
                    jpeg = pixels.read(row["length"])
                    if len(jpeg) != row["length"]:
                        raise OSError(
                            f"pack {pack} ends before byte {row['offset'] + row['length']}"
                        )
                    # A manifest's split wins; else the label's stratified cut decides.
                    split = row["split"] or assign_split(
                        split_key(row["hash"], self.split_seed), bounds[row["label"]]
                    )
                    example = {
                        dataset.FEATURE_IMAGE: jpeg,
                        dataset.FEATURE_LABEL: self.label_ids[row["label"]],
                        dataset.FEATURE_HASH: row["hash"].encode(),
                        dataset.FEATURE_URI: uri.encode(),
                    }
                    yield dataset.SPLITS.index(split), serialize_example(example)
                    yield beam.pvalue.TaggedOutput(
                        self.KEPT, {"hash": row["hash"], "label": row["label"], "split": split}
                    )
        except Exception as error:  # recorded and reported by run(), never a crash mid-run
            late = {"pack": pack, "uri": uri, "error": str(error)}
            yield beam.pvalue.TaggedOutput(self.LATE, late)


def write_shards(examples: beam.PCollection, staging: str, config: IngestConfig) -> None:
    """(split index, example) pairs -> TFRecord shards per split, written in the stage that
    makes them, so no pixels are grouped or held in memory (with the default runner-chosen
    shard count)."""
    by_split = examples | "PartitionBySplit" >> beam.Partition(
        lambda keyed, _: keyed[0], len(dataset.SPLITS)
    )
    for name, keyed in zip(dataset.SPLITS, by_split, strict=True):
        _ = (
            keyed
            | f"Drop{name}Key" >> beam.Map(lambda pair: pair[1])
            | f"Write{name}"
            >> beam.io.WriteToTFRecord(
                storage.join(staging, name),
                file_name_suffix=".tfrecord",
                num_shards=config.shards_per_split,
            )
        )
