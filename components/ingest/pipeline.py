"""Beam pipeline: class folders -> validated, deduplicated, split TFRecord shards.

list -> read, decode once, resize (pixels and a metadata row to the bundle's pack file;
rejects to rejected.jsonl) -> one combine of compact fingerprints plans exact and near
dedupe -> each pack's kept images are split and written to shards.
No per-image record crosses a shuffle: the local runner holds every shuffled element in
memory, so only a fingerprint (~50 bytes compressed) per image is gathered, in one place.
Everything is staged under the output and moved into place before manifest.json is written
last, so a killed run never leaves a dataset that looks complete.
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import sys
import uuid
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from components.common import beam_io, dataset, storage
from components.common.claim import OutputClaim, claim_output
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
    PHASH_BYTES,
    PHASH_INPUT_SIZE,
    Duplicate,
    IngestConfig,
    assign_split,
    combine_digests,
    find_duplicates,
    perceptual_hash,
    phash_bytes,
    record_digest,
    small_classes,
    split_bounds,
    split_key,
)
from components.ingest.sources import Source, SourceItem, resolve_source, with_corrections

log = logging.getLogger(__name__)
NAMESPACE = "gallerytag.ingest"
PIXELS = "_pixels"  # staged JPEGs + metadata rows, one pack per bundle (never published)
LATE = "_late.jsonl"


@dataclass(frozen=True)
class IngestSummary:
    """Counts of one ingest run; seen == accepted + rejected + duplicates."""

    out: str
    seen: int
    accepted: int
    rejected: int
    duplicates: int
    dataset_hash: str
    counts: dict[str, dict[str, int]]
    rejected_reasons: dict[str, int]
    warnings: list[str]
    review: dict = field(default_factory=dict)  # the manifest's review block


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


def build_pipeline(
    pipeline: beam.Pipeline, source: Source, staging: str, config: IngestConfig
) -> None:
    """List, validate (staging resized pixels in pack files), plan deduplication from
    fingerprints, then write each pack's kept images to split shards; writes the shards,
    rejections, duplicates and counts under `staging`."""
    files = (
        pipeline
        | "Partitions" >> beam.Create(source.partitions())
        | "ListFiles" >> beam.ParDo(ListSource(source))
        | "Distribute" >> beam.Reshuffle()
        | "Unbatch" >> beam.FlatMap(unbatch)
    )
    decoded = files | "Inspect" >> beam.ParDo(
        Inspect(config, staging, source.corrections)
    ).with_outputs(Inspect.REJECTED, Inspect.REVIEWED, main="fingerprints")
    plan = decoded.fingerprints | "PlanDeduplication" >> beam.CombineGlobally(
        PlanDeduplicationFn(config.near_duplicate_distance, config.split_ratios, config.split_seed)
    )
    packs = (
        plan
        | "PackNames" >> beam.FlatMap(lambda plan: plan.packs)
        | "SpreadPacks" >> beam.Reshuffle()
    )
    dropped = plan | "DroppedRows" >> beam.Map(lambda plan: plan.dropped)
    bounds = plan | "SplitBounds" >> beam.Map(lambda plan: plan.split_bounds)
    label_ids = {label: index for index, label in enumerate(source.labels)}
    examples = packs | "MakeExamples" >> beam.ParDo(
        MakeExamples(staging, label_ids, config.split_seed),
        dropped=beam.pvalue.AsSingleton(dropped),
        bounds=beam.pvalue.AsSingleton(bounds),
    ).with_outputs(MakeExamples.KEPT, MakeExamples.LATE, main="examples")
    write_shards(examples.examples, staging, config)
    beam_io.write_jsonl(examples[MakeExamples.LATE], storage.join(staging, LATE), "Late")
    rejected = decoded[Inspect.REJECTED]
    beam_io.write_jsonl(rejected, storage.join(staging, "rejected.jsonl"), "Rejected")
    duplicates = plan | "WriteDuplicates" >> beam.ParDo(
        WriteDuplicates(storage.join(staging, "duplicates.jsonl"))
    )
    summary = examples[MakeExamples.KEPT] | "Summarise" >> beam.CombineGlobally(SummariseFn())
    beam_io.write_json_value(summary, storage.join(staging, "_summary.json"), "Summary")
    # "seen" is counted from the listing, independently of the outcomes, so that
    # seen == accepted + rejected + duplicates is a real check that no file was lost.
    outcomes = (
        (files | "Seen" >> beam.Map(lambda _: ("seen", 1)),
         rejected | "RejectReason" >> beam.Map(lambda row: (f"rejected/{row['reason']}", 1)),
         duplicates,
         decoded[Inspect.REVIEWED])
        | "AllOutcomes" >> beam.Flatten()
        | "CountOutcomes" >> beam.CombinePerKey(sum)
        | "CollectOutcomes" >> beam.combiners.ToDict()
    )  # fmt: skip
    beam_io.write_json_value(outcomes, storage.join(staging, "_outcomes.json"), "Outcomes")


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


def review_counts(source: Source, outcomes: dict) -> dict:
    """The manifest's `review` block: which corrections files applied and, among the images
    read, how many took their label from review (`from_review`; `changed` of them differ from
    the source's label), were excluded by it, or were only in the corrections (`added`)."""
    if not source.corrections.files:
        return {}
    return {
        "files": list(source.corrections.files),
        "decisions": len(source.corrections.by_uri),
        "added": len(source.added),
        **{key: outcomes.get(f"review/{key}", 0) for key in ("from_review", "changed", "excluded")},
    }


def run(
    source: str,
    out: str,
    config: IngestConfig = IngestConfig(),
    beam_args: list[str] | None = None,
    corrections: list[str] | None = None,
) -> IngestSummary:
    """Ingest a folder-per-class or manifest source into a dataset directory, with the
    decisions of any `corrections` files (corrections.jsonl) winning; return counts."""
    resolved = with_corrections(resolve_source(source), list(corrections or []))
    if resolved.kind == "folder" and storage.relative_path(resolved.location, out) is not None:
        raise ValueError(
            f"--out {out} is inside the source {resolved.location}: the dataset's files would "
            "become images (or a label) of the next ingest; write it elsewhere"
        )
    with claim_output(out.rstrip("/")) as claim:
        return _ingest_claimed(claim, resolved, config, beam_args)


def _ingest_claimed(
    claim: OutputClaim, resolved: Source, config: IngestConfig, beam_args: list[str] | None
) -> IngestSummary:
    """The ingest run proper, holding the output's claim."""
    labels = resolved.labels
    out, staging = claim.out, claim.staging
    pipeline = beam_io.new_pipeline(beam_args or [])
    build_pipeline(pipeline, resolved, staging, config)
    pipeline.run().wait_until_finish()
    late = storage.read_text(storage.join(staging, LATE)).strip()
    if late:
        raise RuntimeError(
            f"staged pixels went missing during the run (first: {late.splitlines()[0]}); "
            f"run the ingest again (staged output kept in {staging})"
        )
    if storage.exists(storage.join(staging, PIXELS)):
        storage.delete(storage.join(staging, PIXELS), recursive=True)

    summary = beam_io.read_json(storage.join(staging, "_summary.json"))
    outcomes = beam_io.read_json(storage.join(staging, "_outcomes.json"))
    seen = outcomes.get("seen", 0)
    duplicates = outcomes.get("duplicates", 0)
    reasons = {
        key.split("/", 1)[1]: value
        for key, value in outcomes.items()
        if key.startswith("rejected/")
    }
    rejected = sum(reasons.values())
    counts: dict[str, dict[str, int]] = {split: {} for split in dataset.SPLITS}
    for key, value in summary["counts"].items():
        split_name, label = key.split("/", 1)
        counts[split_name][label] = value
    accepted = sum(sum(per_label.values()) for per_label in counts.values())
    dataset_hash = combine_digests(int(summary["digest"]), labels, config)
    shards = {
        split_name: sorted(
            uri.rsplit("/", 1)[-1]
            for uri in storage.list_files(staging)
            if uri.rsplit("/", 1)[-1].startswith(f"{split_name}-")
        )
        for split_name in dataset.SPLITS
    }
    if seen != accepted + rejected + duplicates:
        raise RuntimeError(
            f"ingest lost track of files: saw {seen}, accounted for "
            f"{accepted + rejected + duplicates} (staged output kept in {staging})"
        )
    refuse_empty(counts, labels, resolved.location, rejected, reasons, staging)
    problems = small_classes(counts, labels, config.split_ratios)
    if problems and config.small_class_policy == "error":
        storage.delete(staging, recursive=True)
        raise dataset.DatasetError("classes too small to split: " + " | ".join(problems))
    for problem in problems:
        log.warning(problem)
    totals = {
        "seen": seen,
        "accepted": accepted,
        "rejected": rejected,
        "duplicates": duplicates,
    }
    manifest = dataset.Manifest(
        labels=labels,
        image_size=config.image_size,
        resize_mode=config.resize_mode,
        source=resolved.location,
        counts=counts,
        shards=shards,
        dataset_hash=dataset_hash,
        totals=totals,
        rejected_reasons=reasons,
        config=config.as_dict(),
        warnings=problems,
        review=review_counts(resolved, outcomes),
        records_digest=f"{int(summary['digest']) % (1 << 256):064x}",
    )
    beam_io.commit_staged(
        claim,
        dataset.MANIFEST_NAME,
        manifest.to_json(),
        lambda name: name.endswith(".tfrecord") or name in ("rejected.jsonl", "duplicates.jsonl"),
        lambda committed: check_committed(committed, manifest, out),
    )
    return IngestSummary(
        out=out,
        dataset_hash=dataset_hash,
        counts=counts,
        rejected_reasons=reasons,
        warnings=problems,
        review=manifest.review,
        **totals,
    )


def refuse_empty(
    counts: dict[str, dict[str, int]],
    labels: list[str],
    source: str,
    rejected: int,
    reasons: dict[str, int],
    staging: str,
) -> None:
    """No dataset without images, and no label without one: either would train a model on
    nothing or with a class it never saw."""
    per_label = {label: sum(counts[split].get(label, 0) for split in counts) for label in labels}
    if not any(per_label.values()):
        why = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
        raise dataset.DatasetError(
            f"no image of {source} was accepted ({rejected} rejected: {why or 'none found'}); "
            f"see {storage.join(staging, 'rejected.jsonl')} for each file's reason"
        )
    empty = [label for label, count in per_label.items() if count == 0]
    if empty:
        raise dataset.DatasetError(
            f"label(s) {', '.join(map(repr, empty))} of {source} have no usable image; add "
            "images or remove those folders / manifest rows"
        )


def check_committed(files: list[str], manifest: dataset.Manifest, out: str) -> None:
    """Refuse to write manifest.json when the records in place differ from its counts."""
    found: dict[str, int] = {}
    for url in files:
        name = url.rsplit("/", 1)[-1]
        if name.endswith(".tfrecord"):
            key = name.split("-", 1)[0]
            found[key] = found.get(key, 0) + dataset.count_records(url)
        else:
            with storage.open_file(url, "rb") as stream:
                found[name] = sum(1 for line in stream if line.strip())
    expected = {split: manifest.split_size(split) for split in dataset.SPLITS}
    expected["rejected.jsonl"] = manifest.totals["rejected"]
    expected["duplicates.jsonl"] = manifest.totals["duplicates"]
    problems = [
        f"{key}: {found.get(key, 0)} on disk, {value} counted"
        for key, value in expected.items()
        if found.get(key, 0) != value
    ]
    if problems:
        raise RuntimeError(
            f"dataset in {out} does not match the run's counts "
            f"({'; '.join(problems)}); no manifest.json was written: run the same command again"
        )
