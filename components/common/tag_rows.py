"""The tagging output contract: where a `gallerytag tag` run puts each row kind, in which
format, and how any reader (the tag step's incremental mode, the review queue) reads them back.

JSONL (default): `tags-SSSSS-of-NNNNN.jsonl`, `review.jsonl` and `rejected.jsonl` beside
`_SUCCESS.json`. Parquet: one folder per row kind, `tags/`, `review/` and `rejected/`, each of
`<kind>-SSSSS-of-NNNNN.parquet` shards and nothing else, so `pandas.read_parquet(out/tags)`,
`pyarrow.dataset.dataset(out/tags)` and DuckDB's `read_parquet('out/tags')` read one dataset.
The marker and the staging folder stay outside those folders: DuckDB 2.0 reads a directory
recursively and does not skip hidden sub-folders, so a `.staging-*` inside would be read too.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa

from components.common import storage

FORMATS = ("jsonl", "parquet")
KINDS = ("tags", "review", "rejected")
SUCCESS_NAME = "_SUCCESS.json"

# Each column's type once; a row kind is its list of columns (order = the files' order).
_COLUMN_TYPES = {
    "schema_version": pa.int32(),
    "uri": pa.string(),
    "content_hash": pa.string(),
    "model": pa.string(),
    "model_version": pa.string(),
    "labels": pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())])),
    "top1": pa.string(),
    "score": pa.float64(),
    "margin": pa.float64(),
    "status": pa.string(),
    "reason": pa.string(),
    "detail": pa.string(),
    "tagged_at": pa.timestamp("ms", tz="UTC"),
}


def _schema(*columns: str) -> pa.Schema:
    return pa.schema([(name, _COLUMN_TYPES[name]) for name in columns])


TAG_SCHEMA = _schema(
    "schema_version", "uri", "content_hash", "model", "model_version", "labels", "top1",
    "score", "margin", "status", "reason", "tagged_at",
)  # fmt: skip
REJECTED_SCHEMA = _schema(
    "schema_version", "uri", "model", "model_version", "status", "reason", "detail", "tagged_at"
)
PARQUET_SCHEMAS = {"tags": TAG_SCHEMA, "review": TAG_SCHEMA, "rejected": REJECTED_SCHEMA}


def utc_now() -> str:
    """The current time as the rows spell it: ISO 8601, UTC, milliseconds, `Z`."""
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    """A timezone-aware time as `2026-12-01T13:02:00.000Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shard_name(kind: str, output_format: str, index: int, count: int) -> str:
    """The path, relative to the run's folder, of shard `index` of `count` of a row kind."""
    if output_format == "jsonl":
        if kind != "tags":
            return f"{kind}.jsonl"  # the review queue and the rejects are one file each
        return f"tags-{index:05d}-of-{count:05d}.jsonl"
    return f"{kind}/{kind}-{index:05d}-of-{count:05d}.parquet"


def kind_of(relative: str) -> str | None:
    """Which row kind an output file (path relative to the run's folder) holds, or None."""
    folder, name = posixpath.split(relative)
    if not folder:
        if name.startswith("tags-") and name.endswith((".jsonl", ".parquet")):
            return "tags"  # .parquet at the top: outputs written before the per-kind folders
        return {"review.jsonl": "review", "rejected.jsonl": "rejected"}.get(name)
    if folder in KINDS and name.startswith(f"{folder}-") and name.endswith(".parquet"):
        return folder
    return None


def output_files(out: str) -> list[str]:
    """Every row file of the run in `out`, whatever its format, as paths relative to `out`."""
    return sorted(relative for relative in storage.shallow_files(out, KINDS) if kind_of(relative))


def to_parquet_row(row: dict, kind: str) -> dict:
    """A JSON row with every column of its kind's Parquet schema (absent fields as null)."""
    record = {name: row.get(name) for name in PARQUET_SCHEMAS[kind].names}
    if record["tagged_at"] is not None:
        record["tagged_at"] = datetime.fromisoformat(record["tagged_at"])
    return record


def from_parquet_row(record: dict) -> dict:
    """A Parquet record as the JSON row it was written from: null columns are absent
    fields, the timestamp is its ISO string again."""
    row = {name: value for name, value in record.items() if value is not None}
    if isinstance(row.get("tagged_at"), datetime):
        row["tagged_at"] = format_time(row["tagged_at"])
    return row


def read_file_rows(url: str) -> Iterator[dict]:
    """The rows of one output file (JSONL or Parquet), as JSON rows."""
    if url.endswith(".parquet"):
        import pyarrow.parquet as pq

        with storage.open_file(url, "rb") as stream:
            table = pq.read_table(stream)
        for record in table.to_pylist():
            yield from_parquet_row(record)
        return
    with storage.open_file(url, "r") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


def read_rows(out: str, kind: str) -> Iterator[dict]:
    """Every row of one kind in the run folder `out` (either format)."""
    for relative in output_files(out):
        if kind_of(relative) == kind:
            yield from read_file_rows(storage.join(out, relative))
