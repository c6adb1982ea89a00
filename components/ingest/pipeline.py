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

import logging
from dataclasses import dataclass, field

import apache_beam as beam

from components.common import beam_io, beam_progress, dataset, progress, runners, storage
from components.common.claim import OutputClaim, claim_output
from components.ingest.core import (
    IngestConfig,
    combine_digests,
    small_classes,
)
from components.ingest.dedupe import PlanDeduplicationFn
from components.ingest.packs import PIXELS
from components.ingest.sources import Source, resolve_source, with_corrections
from components.ingest.steps import (
    LATE,
    NAMESPACE,
    Inspect,
    ListSource,
    MakeExamples,
    SummariseFn,
    WriteDuplicates,
    unbatch,
    write_shards,
)

log = logging.getLogger(__name__)


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
    runners.runner_name(beam_args or [])  # a refused --runner fails before any work
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
    shown = progress.Progress("ingest", "images")
    beam_progress.run_pipeline(pipeline, shown, (NAMESPACE, "seen"), (NAMESPACE, "listed"))
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
