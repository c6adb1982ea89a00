"""Beam pipeline: class folders -> validated, deduplicated, split TFRecord shards.

list -> read, decode once, resize (pixels to a pack file; rejects to rejected.jsonl) ->
exact and near dedupe, split (light records only) -> staged pixels -> shards.
Everything is staged under the output and moved into place before manifest.json is written
last, so a killed run never leaves a dataset that looks complete.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from components.common import beam_io, dataset, storage
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
    close_pairs,
    combine_digests,
    near_duplicate_groups,
    perceptual_hash,
    pick_kept,
    record_digest,
    small_classes,
)
from components.ingest.sources import Source, SourceItem, resolve_source

log = logging.getLogger(__name__)
NAMESPACE = "gallerytag.ingest"
PIXELS = "_pixels"  # staged, resized JPEGs in one pack file per bundle (never published)
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


class ListSource(beam.DoFn):
    """Expand one partition of the source into (uri, label, split) items."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def process(self, partition: str) -> Iterator[SourceItem]:
        """Yield every item of the partition."""
        yield from self.source.items(partition)


class Inspect(beam.DoFn):
    """Read one file, validate it by content, fingerprint it and append its final pixels to
    the bundle's scratch pack file; rejects go to a tagged output.

    Only a light record leaves this step: deduplication and splitting shuffle these, never
    pixels. Each image is decoded once, at the reduced JPEG scale the target size needs; the
    resized, re-encoded JPEG waits in the pack until the kept ones are written to shards
    after the shuffle.
    """

    REJECTED = "rejected"

    def __init__(self, config: IngestConfig, staging: str) -> None:
        self.config = config
        self.staging = staging
        self.seen = Metrics.counter(NAMESPACE, "seen")
        self.accepted = Metrics.counter(NAMESPACE, "decoded")
        self._pack: PackWriter | None = None

    def start_bundle(self) -> None:
        """A bundle's pixels go to a pack file of its own, opened on its first image."""
        self._pack = None

    def finish_bundle(self) -> None:
        """Close the pack: Beam commits the bundle's records only after this returns."""
        if self._pack is not None:
            self._pack.close()
            self._pack = None

    def teardown(self) -> None:
        """A failed bundle's pack is left for the staging clean-up."""
        if self._pack is not None:
            self._pack.abandon()

    def process(self, element: SourceItem) -> Iterator:
        """Emit {uri, label, hash, split, phash, pixels (pack range)} for a usable image,
        or a rejection row."""
        uri, label, split = element
        self.seen.inc()
        if not label:
            yield self._reject(uri, label, "not_in_label_folder", "put it in <source>/<label>/")
            return
        try:
            data = storage.read_bytes(uri)
        except Exception as error:  # a vanished or unreadable object is a rejection, not a crash
            yield self._reject(uri, label, "unreadable_file", str(error))
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
        content_hash = hash_bytes(data)
        pixels = encode_jpeg(fit_image(image, *target), self.config.jpeg_quality)
        if self._pack is None:
            self._pack = PackWriter(self.staging)
        self.accepted.inc()
        yield {
            "uri": uri,
            "label": label,
            "hash": content_hash,
            "split": split,  # None unless the manifest fixed it
            "phash": perceptual_hash(image),
            "pixels": self._pack.append(pixels),
        }

    def _reject(self, uri: str, label: str, reason: str, detail: str) -> beam.pvalue.TaggedOutput:
        Metrics.counter(NAMESPACE, f"rejected_{reason}").inc()
        row = {"uri": uri, "label": label, "reason": reason, "detail": detail}
        return beam.pvalue.TaggedOutput(self.REJECTED, row)


DUPLICATES = "duplicates"


class KeepOnePerHash(beam.DoFn):
    """Keep one record per content hash; report the others as duplicates."""

    def process(self, element: tuple[str, Iterable[dict]]) -> Iterator:
        """Emit the kept record and a duplicates row for each other copy."""
        _, records = element
        records = list(records)
        kept_uri = pick_kept([r["uri"] for r in records])
        kept = next(r for r in records if r["uri"] == kept_uri)
        labels = sorted({r["label"] for r in records})
        for record in records:
            if record is kept:
                continue
            yield beam.pvalue.TaggedOutput(
                DUPLICATES,
                duplicate_row(record, kept_uri, kept["label"], "exact", len(labels) > 1),
            )
        yield kept


def duplicate_row(record: dict, kept_uri: str, kept_label: str, kind: str, conflict: bool) -> dict:
    """The duplicates.jsonl row for a dropped copy."""
    Metrics.counter(NAMESPACE, f"duplicates_{kind}").inc()
    return {
        "uri": record["uri"],
        "label": record["label"],
        "kept_uri": kept_uri,
        "kept_label": kept_label,
        "kind": kind,
        "label_conflict": conflict,
    }


class DropNearDuplicates(beam.DoFn):
    """Keep a record unless a perceptually near-identical image with a smaller URI is kept."""

    def process(self, record: dict, groups: dict[str, tuple[str, str, bool]]) -> Iterator:
        """Emit the record, or a near-duplicate row (groups: uri -> kept uri, label, conflict)."""
        group = groups.get(record["uri"])
        if group is None or group[0] == record["uri"]:
            yield record
            return
        kept_uri, kept_label, conflict = group
        yield beam.pvalue.TaggedOutput(
            DUPLICATES, duplicate_row(record, kept_uri, kept_label, "near", conflict)
        )


def to_example(record: dict, label_ids: dict[str, int]) -> bytes:
    """Serialise one accepted record as a tf.train.Example."""
    return serialize_example(
        {
            dataset.FEATURE_IMAGE: record["jpeg"],
            dataset.FEATURE_LABEL: label_ids[record["label"]],
            dataset.FEATURE_HASH: record["hash"].encode(),
            dataset.FEATURE_URI: record["uri"].encode(),
        }
    )


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


class NearDuplicateGroupsFn(beam.CombineFn):
    """Collect (uri, label, perceptual hash) of every kept image, then group the near-identical.

    One compact list instead of a shuffle of max_distance + 1 band records per image, which
    the local runner holds in memory (measured: ~15 KB per image at the default distance).
    """

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance

    def create_accumulator(self) -> list[tuple[str, str, int]]:
        """Start empty."""
        return []

    def add_input(self, members: list, record: dict) -> list[tuple[str, str, int]]:
        """Remember one image."""
        members.append((record["uri"], record["label"], record["phash"]))
        return members

    def merge_accumulators(self, accumulators: Iterable[list]) -> list[tuple[str, str, int]]:
        """Concatenate partial lists."""
        return [member for members in accumulators for member in members]

    def extract_output(self, members: list) -> dict[str, tuple[str, str, bool]]:
        """uri -> (kept uri, kept label, labels conflict) for images in a near-duplicate group."""
        pairs = close_pairs([phash for _, _, phash in members], self.max_distance)
        return near_duplicate_groups((members[i][:2], members[j][:2]) for i, j in sorted(pairs))


def drop_near_duplicates(
    records: beam.PCollection, max_distance: int
) -> tuple[beam.PCollection, beam.PCollection]:
    """(unique records, near-duplicate rows): near-duplicate groups of all records (a small
    side input) -> keep one per group."""
    if max_distance < 0:
        return records, records.pipeline | "NoNearDuplicates" >> beam.Create([])
    groups = records | "NearDuplicateGroups" >> beam.CombineGlobally(
        NearDuplicateGroupsFn(max_distance)
    )
    result = records | "DropNearDuplicates" >> beam.ParDo(
        DropNearDuplicates(), groups=beam.pvalue.AsSingleton(groups)
    ).with_outputs(DUPLICATES, main="unique")
    return result.unique, result[DUPLICATES]


def build_pipeline(
    pipeline: beam.Pipeline, source: Source, staging: str, config: IngestConfig
) -> None:
    """List, validate (storing resized pixels in pack files), dedupe and split light
    records, then pack the kept images' pixels into shards; writes the shards, rejections,
    duplicates and counts under `staging`."""
    files = (
        pipeline
        | "Partitions" >> beam.Create(source.partitions())
        | "ListFiles" >> beam.ParDo(ListSource(source))
        | "Distribute" >> beam.Reshuffle()
    )
    decoded = files | "Inspect" >> beam.ParDo(Inspect(config, staging)).with_outputs(
        Inspect.REJECTED, main="images"
    )
    deduped = (
        decoded.images
        | "KeyByHash" >> beam.Map(lambda record: (record["hash"], record))
        | "GroupByHash" >> beam.GroupByKey()
        | "KeepOnePerHash" >> beam.ParDo(KeepOnePerHash()).with_outputs(DUPLICATES, main="kept")
    )
    unique, near_duplicates = drop_near_duplicates(deduped.kept, config.near_duplicate_distance)
    split = unique | "AssignSplit" >> beam.Map(
        lambda record: {
            **record,
            "split": record["split"] or assign_split(record["hash"], config.split_ratios),
        }
    )
    write_shards(split, staging, config, source.labels)
    rejected = decoded[Inspect.REJECTED]
    beam_io.write_jsonl(rejected, storage.join(staging, "rejected.jsonl"), "Rejected")
    duplicates = (deduped[DUPLICATES], near_duplicates) | "AllDuplicates" >> beam.Flatten()
    beam_io.write_jsonl(duplicates, storage.join(staging, "duplicates.jsonl"), "Duplicates")
    summary = split | "Summarise" >> beam.CombineGlobally(SummariseFn())
    beam_io.write_json_value(summary, storage.join(staging, "_summary.json"), "Summary")
    # "seen" is counted from the listing, independently of the outcomes, so that
    # seen == accepted + rejected + duplicates is a real check that no file was lost.
    outcomes = (
        (files | "Seen" >> beam.Map(lambda _: "seen"),
         rejected | "RejectReason" >> beam.Map(lambda row: f"rejected/{row['reason']}"),
         duplicates | "Duplicate" >> beam.Map(lambda _: "duplicates"))
        | "AllOutcomes" >> beam.Flatten()
        | "CountOutcomes" >> beam.combiners.Count.PerElement()
        | "CollectOutcomes" >> beam.combiners.ToDict()
    )  # fmt: skip
    beam_io.write_json_value(outcomes, storage.join(staging, "_outcomes.json"), "Outcomes")


class PackWriter:
    """Appends staged JPEGs to one new scratch file; each append returns where it went.

    One file per bundle instead of one per image: no create/rename per image locally, and
    two GCS requests per bundle instead of per image. A retried bundle writes a new pack,
    so no reader ever sees a half-written one (readers run after the shuffle).
    """

    def __init__(self, staging: str) -> None:
        self.name = f"{uuid.uuid4().hex}.pack"
        self._stream = storage.open_file(pack_path(staging, self.name), "wb")
        self._offset = 0

    def append(self, data: bytes) -> tuple[str, int, int]:
        """Write `data`; return (pack name, offset, length) to read it back."""
        self._stream.write(data)
        where = (self.name, self._offset, len(data))
        self._offset += len(data)
        return where

    def close(self) -> None:
        """Finish the file (on GCS: complete the upload)."""
        self._stream.close()

    def abandon(self) -> None:
        """Drop the file handle after a failure, without raising a second error."""
        try:
            self._stream.close()
        except Exception as error:  # the staging folder is removed with the failed run
            log.debug("pack %s not closed cleanly: %s", self.name, error)


def pack_path(staging: str, name: str) -> str:
    """Where Inspect's pack files live until the shards are written."""
    return storage.join(staging, PIXELS, name)


class MakeExample(beam.DoFn):
    """Serialise a kept image (its staged pixels) as a tf.train.Example."""

    LATE = "late"

    def __init__(self, staging: str, label_ids: dict[str, int]) -> None:
        self.staging = staging
        self.label_ids = label_ids

    def process(self, row: dict) -> Iterator:
        """Emit (split index, serialized example), or a failure row if the pixels are gone."""
        try:
            name, offset, length = row["pixels"]
            jpeg = storage.read_range(pack_path(self.staging, name), offset, length)
            if len(jpeg) != length:
                raise OSError(f"pack {name} ends before byte {offset + length}")
        except Exception as error:  # recorded and reported by run(), never a crash mid-run
            yield beam.pvalue.TaggedOutput(self.LATE, {"uri": row["uri"], "error": str(error)})
            return
        record = {**row, "jpeg": jpeg}
        yield dataset.SPLITS.index(row["split"]), to_example(record, self.label_ids)


def write_shards(
    records: beam.PCollection, staging: str, config: IngestConfig, labels: list[str]
) -> None:
    """Kept records -> their staged pixels -> TFRecord shards per split. Fused into one
    stage after the shuffle, so no pixels are grouped or held in memory (with the default
    runner-chosen shard count)."""
    label_ids = {label: index for index, label in enumerate(labels)}
    examples = records | "MakeExample" >> beam.ParDo(MakeExample(staging, label_ids)).with_outputs(
        MakeExample.LATE, main="ok"
    )
    by_split = examples.ok | "PartitionBySplit" >> beam.Partition(
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
    beam_io.write_jsonl(examples[MakeExample.LATE], storage.join(staging, LATE), "Late")


def run(
    source: str,
    out: str,
    config: IngestConfig = IngestConfig(),
    beam_args: list[str] | None = None,
) -> IngestSummary:
    """Ingest a folder-per-class or manifest source into a dataset directory; return counts."""
    resolved = resolve_source(source)
    labels = resolved.labels
    out = out.rstrip("/")
    staging = beam_io.new_staging_dir(out)
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
    )
    beam_io.commit_staged(
        staging,
        out,
        dataset.MANIFEST_NAME,
        manifest.to_json(),
        lambda name: name.endswith(".tfrecord") or name in ("rejected.jsonl", "duplicates.jsonl"),
    )
    return IngestSummary(
        out=out,
        dataset_hash=dataset_hash,
        counts=counts,
        rejected_reasons=reasons,
        warnings=problems,
        **totals,
    )
