"""Beam batch tagging: list images -> decode -> RunInference -> tag rows, review queue, rejects.

Outputs are staged and moved into place; `_SUCCESS.json` (the run manifest with counts) is
written last, so its presence means the output is complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from components.common import beam_io, storage
from components.common.images import DecodeLimits, ImageRejected, content_hash, load_for_model
from components.common.tracking import TaggerSpec
from components.tag.handler import KerasImageHandler
from components.tag.policy import TagPolicy, rejected_row, tag_row

NAMESPACE = "gallerytag.tag"
SUCCESS_NAME = "_SUCCESS.json"


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
    seconds: float

    @property
    def images_per_second(self) -> float:
        """End-to-end throughput of the run."""
        return self.seen / self.seconds if self.seconds > 0 else 0.0


class ReadAndDecode(beam.DoFn):
    """Read one file and turn it into the model's input, or a rejection with the reason."""

    REJECTED = "rejected"

    def __init__(self, tagger: TaggerSpec, limits: DecodeLimits) -> None:
        self.tagger = tagger
        self.limits = limits
        self.seen = Metrics.counter(NAMESPACE, "seen")

    def process(self, uri: str) -> Iterator:
        """Emit ((uri, hash), pixels) or a tagged rejected row."""
        self.seen.inc()
        try:
            data = storage.read_bytes(uri)
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


def build_pipeline(
    pipeline: beam.Pipeline,
    source: str,
    tagger: TaggerSpec,
    policy: TagPolicy,
    staging: str,
    shards: int,
    limits: DecodeLimits = DecodeLimits(),
) -> None:
    """Attach the tagging transforms to `pipeline`, writing every output under `staging`."""
    uris = (
        pipeline
        | "Source" >> beam.Create([source])
        | "ListImages" >> beam.FlatMap(storage.list_files)
        | "Distribute" >> beam.Reshuffle()
    )
    decoded = uris | "ReadAndDecode" >> beam.ParDo(ReadAndDecode(tagger, limits)).with_outputs(
        ReadAndDecode.REJECTED, main="images"
    )
    handler = KeyedModelHandler(KerasImageHandler(tagger.model_file))
    predictions, dead_letter = (
        decoded.images | "RunInference" >> RunInference(handler).with_exception_handling()
    )
    rows = predictions | "ToTagRow" >> beam.Map(
        lambda keyed: tag_row(
            keyed[0][0],
            keyed[0][1],
            keyed[1].inference,
            tagger.labels,
            policy,
            tagger.uri,
            tagger.version,
        )
    )
    failed = dead_letter.failed_inferences | "FailedBatches" >> beam.FlatMap(
        failed_batch_rows, tagger
    )
    rejected = (decoded[ReadAndDecode.REJECTED], failed) | "AllRejected" >> beam.Flatten()
    beam_io.write_jsonl(rows, storage.join(staging, "tags"), "Tags", shards)
    review = rows | "OnlyReview" >> beam.Filter(lambda row: row["status"] == "review")
    beam_io.write_jsonl(review, storage.join(staging, "review.jsonl"), "Review")
    beam_io.write_jsonl(rejected, storage.join(staging, "rejected.jsonl"), "Rejected")
    # "seen" is counted from the listing, independently of the outcomes, so that
    # seen == auto + review + rejected is a real check against silent loss.
    counts = (
        (uris | "Seen" >> beam.Map(lambda _: "seen"),
         rows | "StatusOfTags" >> beam.Map(lambda row: row["status"]),
         rejected | "StatusOfRejects" >> beam.Map(lambda row: row["status"]))
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
    shards: int = 4,
    beam_args: list[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
) -> TagSummary:
    """Tag every image under `source` and write the results under `out`."""
    source = source.rstrip("/")
    out = out.rstrip("/")
    if not storage.exists(source):
        raise FileNotFoundError(f"source {source} does not exist")
    started = time.perf_counter()
    staging = beam_io.new_staging_dir(out)
    pipeline = test_pipeline or beam.Pipeline(
        options=PipelineOptions(beam_io.default_beam_args(beam_args or []))
    )
    build_pipeline(pipeline, source, tagger, policy, staging, shards)
    pipeline.run().wait_until_finish()
    counts = beam_io.read_json(storage.join(staging, "_counts.json"))
    summary = TagSummary(
        out=out,
        model=tagger.uri,
        model_version=tagger.version,
        seen=counts.get("seen", 0),
        auto=counts.get("auto", 0),
        review=counts.get("review", 0),
        rejected=counts.get("rejected", 0),
        seconds=round(time.perf_counter() - started, 3),
    )
    accounted = summary.auto + summary.review + summary.rejected
    if accounted != summary.seen:
        raise RuntimeError(
            f"tagging lost track of images: saw {summary.seen} but accounted for {accounted} "
            f"(staged output kept in {staging} for inspection)"
        )
    record = {**asdict(summary), "images_per_second": round(summary.images_per_second, 2)}
    beam_io.commit_staged(
        staging,
        out,
        SUCCESS_NAME,
        json.dumps(record, indent=2, sort_keys=True),
        lambda name: name.startswith("tags-") or name in ("review.jsonl", "rejected.jsonl"),
    )
    return summary
