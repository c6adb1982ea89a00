"""Beam batch tagging: list images -> decode -> RunInference -> tag rows, review queue, rejects.

Outputs are staged and moved into place; `_SUCCESS.json` (the run manifest with counts) is
written last, so its presence means the output is complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from components.common import beam_io, beam_progress, progress, storage, tag_rows
from components.common.claim import OutputClaim, claim_output
from components.common.images import DecodeLimits, ImageRejected, content_hash, load_for_model
from components.common.tracking import TaggerSpec, check_model_file
from components.tag.config import NAMESPACE, TagOutputs
from components.tag.outputs import WriteRows
from components.tag.policy import TagPolicy, rejected_row, tag_row
from components.tag.previous import policy_record, read_previous_rows
from components.tag.runtime import RuntimeChoice, choose_runtime
from components.tag.workers import (
    inference_threads,
    model_handler,
    stage_model_for_workers,
    stage_runtime_for_workers,
)
from components.tag.writeback import CopyToLabelFolder, WriteObjectMetadata

log = logging.getLogger(__name__)
SUCCESS_NAME = tag_rows.SUCCESS_NAME


@dataclass(frozen=True)
class TagSummary:
    """Counts of one tagging run; seen == auto + review + rejected."""

    out: str
    model: str
    model_version: str | None
    seen: int
    auto: int
    review: int
    rejected: int
    carried: int  # rows kept from the previous run (incremental mode), part of auto + review
    seconds: float
    runtime: str = "keras"  # what ran the forward pass: keras, openvino (f32) or openvino-bf16

    @property
    def images_per_second(self) -> float:
        """End-to-end throughput of the run."""
        return self.seen / self.seconds if self.seconds > 0 else 0.0


class ReadAndDecode(beam.DoFn):
    """Read one file and turn it into the model's input, or a rejection with the reason."""

    REJECTED = "rejected"
    CARRIED = "carried"

    def __init__(self, tagger: TaggerSpec, limits: DecodeLimits) -> None:
        self.tagger = tagger
        self.limits = limits
        self.seen = Metrics.counter(NAMESPACE, "seen")

    def process(self, joined: tuple[str, dict]) -> Iterator:
        """Emit ((uri, hash), pixels), the previous row of an unchanged image, or a rejection."""
        uri, sides = joined
        if not sides["listed"]:
            return  # a previous row for an image that is gone: drop it
        self.seen.inc()
        previous = list(sides["previous"])
        try:
            data = storage.read_bytes(uri)
            if previous and previous[0].get("content_hash") == content_hash(data):
                Metrics.counter(NAMESPACE, "carried").inc()
                yield beam.pvalue.TaggedOutput(self.CARRIED, previous[0])
                return
            pixels = load_for_model(
                data, self.tagger.image_size, self.tagger.resize_mode, self.limits
            )
        except ImageRejected as rejection:
            yield self._reject(uri, rejection.reason, rejection.detail)
            return
        except Exception as error:  # unreadable object: record it, keep the job alive
            yield self._reject(uri, "unreadable_file", f"{type(error).__name__}: {error}")
            return
        yield (uri, content_hash(data)), pixels

    def _reject(self, uri: str, reason: str, detail: str) -> beam.pvalue.TaggedOutput:
        Metrics.counter(NAMESPACE, f"rejected_{reason}").inc()
        row = rejected_row(uri, reason, detail, self.tagger.uri, self.tagger.version)
        return beam.pvalue.TaggedOutput(self.REJECTED, row)


def failed_batch_rows(failure: tuple, tagger: TaggerSpec) -> Iterator[dict]:
    """Expand one failed inference batch (from the dead-letter output) into rejected rows."""
    batch, error = failure
    for (uri, _), _ in batch:
        yield rejected_row(uri, "inference_failed", repr(error), tagger.uri, tagger.version)


def prediction_row(keyed: tuple, tagger: TaggerSpec, policy: TagPolicy) -> dict:
    """The tag row of one RunInference result ((uri, content hash), PredictionResult)."""
    (uri, digest), result = keyed
    return tag_row(uri, digest, result.inference, tagger.labels, policy, tagger.uri,
                   tagger.version, tagger.multi_label)  # fmt: skip


def excluded_prefixes(source: str, staging: str, outputs: TagOutputs) -> list[str]:
    """Prefixes, spelled as the listing of `source` spells them, of this run's own outputs
    (--out, --copy-to) that lie inside the source: never inputs, or every run would tag
    the previous run's files and copies again."""
    out = staging.rsplit("/", 1)[0]
    prefixes = []
    for target in (out, outputs.copy_to):
        inside = storage.relative_path(source, target) if target else None
        if inside:
            prefixes.append(storage.join(source, inside) + "/")
    return prefixes


def list_inputs(source: str, excluded: list[str]) -> Iterator[str]:
    """The files under `source`, minus those under the excluded prefixes."""
    listed = Metrics.counter(NAMESPACE, "listed")  # the total of the live progress
    for uri in storage.list_files(source):
        if not excluded or not uri.startswith(tuple(excluded)):
            listed.inc()
            yield uri


def build_pipeline(
    pipeline: beam.Pipeline,
    source: str,
    tagger: TaggerSpec,
    policy: TagPolicy,
    staging: str,
    outputs: TagOutputs,
    previous: beam.PCollection,
    limits: DecodeLimits = DecodeLimits(),
    threads: int | None = None,
    runtime: RuntimeChoice | None = None,
) -> None:
    """Attach the tagging transforms to `pipeline`, writing every output under `staging`;
    `threads` caps the inference runtime's threads in each worker; `runtime` is Keras on
    the tagger's .keras file unless chosen otherwise."""
    uris = (
        pipeline
        | "Source" >> beam.Create([source])
        | "ListImages" >> beam.FlatMap(list_inputs, excluded_prefixes(source, staging, outputs))
        | "Distribute" >> beam.Reshuffle()
    )
    listed = uris | "KeyByUri" >> beam.Map(lambda uri: (uri, None))
    decoded = (
        {"listed": listed, "previous": previous}
        | "JoinPrevious" >> beam.CoGroupByKey()
        | "ReadAndDecode"
        >> beam.ParDo(ReadAndDecode(tagger, limits)).with_outputs(
            ReadAndDecode.REJECTED, ReadAndDecode.CARRIED, main="images"
        )
    )
    handler = KeyedModelHandler(model_handler(tagger, runtime, threads))
    predictions, dead_letter = (
        decoded.images | "RunInference" >> RunInference(handler).with_exception_handling()
    )
    fresh = predictions | "ToTagRow" >> beam.Map(prediction_row, tagger, policy)
    if outputs.write_metadata:
        fresh = fresh | "WriteObjectMetadata" >> beam.ParDo(WriteObjectMetadata())
    rows = (fresh, decoded[ReadAndDecode.CARRIED]) | "AllRows" >> beam.Flatten()
    if outputs.copy_to:  # carried rows too: the copy folder may be new or incomplete
        rows = rows | "CopyToLabelFolders" >> beam.ParDo(CopyToLabelFolder(outputs.copy_to))
    failed = dead_letter.failed_inferences | "FailedBatches" >> beam.FlatMap(
        failed_batch_rows, tagger
    )
    rejected = (decoded[ReadAndDecode.REJECTED], failed) | "AllRejected" >> beam.Flatten()
    review = rows | "OnlyReview" >> beam.Filter(lambda row: row["status"] == "review")
    for kind, kind_rows in (("tags", rows), ("review", review), ("rejected", rejected)):
        sink = WriteRows(staging, kind, outputs.format, outputs.shards, outputs.min_rows_per_shard)
        _ = kind_rows | f"Write{kind.title()}" >> sink
    # "seen" is counted from the listing, independently of the outcomes, so that
    # seen == auto + review + rejected is a real check against silent loss.
    counts = (
        (uris | "Seen" >> beam.Map(lambda _: "seen"),
         rows | "StatusOfTags" >> beam.Map(lambda row: row["status"]),
         rejected | "StatusOfRejects" >> beam.Map(lambda row: row["status"]),
         decoded[ReadAndDecode.CARRIED] | "Carried" >> beam.Map(lambda _: "carried"))
        | "AllStatuses" >> beam.Flatten()
        | "CountStatuses" >> beam.combiners.Count.PerElement()
        | "CollectCounts" >> beam.combiners.ToDict()
    )  # fmt: skip
    beam_io.write_json_value(counts, storage.join(staging, "_counts.json"), "Counts")


def run(
    source: str,
    out: str,
    tagger: TaggerSpec,
    policy: TagPolicy = TagPolicy(),
    outputs: TagOutputs = TagOutputs(),
    beam_args: list[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
    runtime: str | RuntimeChoice = "keras",
    precision: str = "f32",
) -> TagSummary:
    """Tag every image under `source` and write the results under `out`; `runtime` is auto,
    keras, openvino (components/tag/runtime.py) or an already chosen RuntimeChoice."""
    # Canonical spellings, so every row's uri names its image from anywhere (and a relative
    # source does not give relative uris).
    source, out = storage.canonical(source), storage.canonical(out)
    if outputs.copy_to:
        outputs = dataclasses.replace(outputs, copy_to=storage.canonical(outputs.copy_to))
    if not storage.exists(source):
        raise FileNotFoundError(f"source {source} does not exist")
    if outputs.write_metadata and not source.startswith("gs://"):
        raise ValueError("--write-metadata needs a gs:// source (object metadata is GCS-only)")
    for target in (out, outputs.copy_to):
        if target and storage.relative_path(source, target) == "":
            raise ValueError(f"{target} is the source folder itself; write outputs elsewhere")
    if "://" not in tagger.model_file:
        check_model_file(tagger.model_file)
    # An IR exported on the fly lives for this job only (workers of a remote runner get it
    # through --temp_location, as the .keras file).
    with tempfile.TemporaryDirectory(prefix="gallerytag-runtime-") as cache:
        if not isinstance(runtime, RuntimeChoice):
            runtime = choose_runtime(tagger, runtime, precision, cache)
        log.info("%s", runtime.describe())
        runtime = stage_runtime_for_workers(runtime, beam_args or [])
        tagger = stage_model_for_workers(tagger, beam_args or [])
        with claim_output(out) as claim:
            return _tag_claimed(
                claim, source, tagger, policy, outputs, beam_args, test_pipeline, runtime
            )


def _tag_claimed(
    claim: OutputClaim,
    source: str,
    tagger: TaggerSpec,
    policy: TagPolicy,
    outputs: TagOutputs,
    beam_args: list[str] | None,
    test_pipeline: beam.Pipeline | None,
    runtime: RuntimeChoice,
) -> TagSummary:
    """The tagging run proper, holding the output's claim."""
    out, staging = claim.out, claim.staging
    started = time.perf_counter()
    pipeline = test_pipeline or beam_io.new_pipeline(beam_args or [])
    previous = (
        read_previous_rows(pipeline, out, tagger, policy)
        if outputs.incremental
        else pipeline | "NoPreviousRows" >> beam.Create([])
    )
    threads = inference_threads(beam_args or [])
    build_pipeline(pipeline, source, tagger, policy, staging, outputs, previous,
                   threads=threads, runtime=runtime)  # fmt: skip
    shown = progress.Progress("tag", "images")
    beam_progress.run_pipeline(pipeline, shown, (NAMESPACE, "seen"), (NAMESPACE, "listed"))
    counts = beam_io.read_json(storage.join(staging, "_counts.json"))
    summary = TagSummary(
        out=out,
        model=tagger.uri,
        model_version=tagger.version,
        seen=counts.get("seen", 0),
        auto=counts.get("auto", 0),
        review=counts.get("review", 0),
        rejected=counts.get("rejected", 0),
        carried=counts.get("carried", 0),
        seconds=round(time.perf_counter() - started, 3),
        runtime=runtime.label,
    )
    accounted = summary.auto + summary.review + summary.rejected
    if accounted != summary.seen:
        raise RuntimeError(
            f"tagging lost track of images: saw {summary.seen} but accounted for {accounted} "
            f"(staged output kept in {staging} for inspection)"
        )
    record = {
        **asdict(summary),
        "images_per_second": round(summary.images_per_second, 2),
        "policy": policy_record(policy),  # which bars decided auto/review, what they promise
        "labels": list(tagger.labels),  # the full label list: review rows carry only a top k
        "format": outputs.format,
        "files": {  # where each row kind is, relative to `out`
            kind: tag_rows.shard_name(kind, outputs.format, 0, 1).replace("-00000-of-00001", "-*")
            for kind in tag_rows.KINDS
        },
    }
    beam_io.commit_staged(
        claim,
        SUCCESS_NAME,
        json.dumps(record, indent=2, sort_keys=True),
        lambda relative: tag_rows.kind_of(relative) is not None,
        lambda committed: check_committed(committed, summary),
        folders=tag_rows.KINDS,
    )
    return summary


def committed_counts(files: list[str], out: str) -> dict[str, int]:
    """Tag rows per status, and the rows of the review queue and of the rejects, in `files`
    (the output files in place in `out`, either format): what a reader really finds."""
    counts = {"auto": 0, "review": 0, "review rows": 0, "rejected rows": 0}
    for url in files:
        kind = tag_rows.kind_of(storage.relative_path(out, url) or "")
        if kind is None:
            continue
        if kind != "tags":
            counts[f"{kind} rows"] += sum(1 for _ in tag_rows.read_file_rows(url))
            continue
        for row in tag_rows.read_file_rows(url):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def check_committed(files: list[str], summary: TagSummary) -> None:
    """Refuse to write _SUCCESS.json when the rows in place differ from the run's counts."""
    found = committed_counts(files, summary.out)
    expected = {
        "auto": summary.auto,
        "review": summary.review,
        "review rows": summary.review,
        "rejected rows": summary.rejected,
    }
    problems = [
        f"{key}: {found.get(key, 0)} on disk, {value} counted"
        for key, value in expected.items()
        if found.get(key, 0) != value
    ]
    problems += [f"unexpected status {key!r} on disk" for key in sorted(set(found) - set(expected))]
    if problems:
        detail = "; ".join(problems)
        raise RuntimeError(
            f"tagging output in {summary.out} does not match the run's counts ({detail}); "
            f"no {SUCCESS_NAME} was written: run the same command again"
        )
