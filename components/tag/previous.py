"""Incremental tagging: the previous complete output's rows that a new run may keep.

A row is carried only when the same model version made it under the same policy and row
schema; everything else is tagged again.
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam

from components.common import storage, tag_rows
from components.common.tracking import TaggerSpec
from components.tag.policy import ROW_SCHEMA_VERSION, TagPolicy

log = logging.getLogger(__name__)


def policy_record(policy: TagPolicy) -> dict:
    """The policy as _SUCCESS.json records it, in JSON types (to compare with a read one)."""
    return json.loads(json.dumps(policy.as_record(), sort_keys=True))


def read_previous_rows(
    pipeline: beam.Pipeline, out: str, tagger: TaggerSpec, policy: TagPolicy
) -> beam.PCollection:
    """(uri, row) of the last complete output's rows made by this very model version under
    this very policy. A row's status came from its run's policy and a row keeps only its
    top labels, so under another policy nothing is carried: every image is tagged again."""
    success = storage.join(out, tag_rows.SUCCESS_NAME)
    if not storage.exists(success):
        return pipeline | "NoPreviousRows" >> beam.Create([])
    previous_policy = json.loads(storage.read_text(success)).get("policy")
    if previous_policy != policy_record(policy):
        log.warning("the tag policy differs from the previous run's: re-tagging every image")
        return pipeline | "NoPreviousRows" >> beam.Create([])
    shards = [
        storage.join(out, relative)
        for relative in tag_rows.output_files(out)
        if tag_rows.kind_of(relative) == "tags"
    ]
    # Each format's files read as one PCollection of JSON-typed rows (the JSONL row shape).
    readers = {
        "Jsonl": (".jsonl", beam.io.ReadAllFromText, json.loads),
        "Parquet": (".parquet", beam.io.ReadAllFromParquet, tag_rows.from_parquet_row),
    }
    parts = []
    for name, (suffix, read_all, as_row) in readers.items():
        files = [url for url in shards if url.endswith(suffix)]
        if files:
            parts.append(
                pipeline
                | f"Previous{name}" >> beam.Create(files)
                | f"ReadPrevious{name}" >> read_all()
                | f"Previous{name}Rows" >> beam.Map(as_row)
            )
    if not parts:
        return pipeline | "NoPreviousShards" >> beam.Create([])
    return (
        parts
        | "AllPrevious" >> beam.Flatten()
        # Rows of an older row schema lack fields (v1: `tagged_at`): those images are tagged again.
        | "SameModelAndSchema"
        >> beam.Filter(
            lambda row: (
                row["model_version"] == tagger.version
                and row["model"] == tagger.uri
                and row.get("schema_version") == ROW_SCHEMA_VERSION
            )
        )
        | "KeyPreviousByUri" >> beam.Map(lambda row: (row["uri"], row))
    )
