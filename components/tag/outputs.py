"""Beam sinks of the tag rows: every row kind sharded by URI into as many files as its rows
fill (`shard_count`), in JSONL or Parquet (layout: `components/common/tag_rows.py`).

Why not Beam's file sinks: with a fixed `num_shards` they write every shard even when it is
empty (4 files for 12 rows: 3 empty), and with `num_shards=0` the count is the number of
bundles the runner happened to make (2 files for 12 rows locally, measured; many more on
Dataflow). Here the count is known before the first file is opened, and the shard names
carry the real total.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from components.common import storage, tag_rows

PARQUET_BATCH = 10_000  # rows per Parquet write: bounds the writer's memory


def shard_count(rows: int, max_shards: int, min_rows_per_shard: int) -> int:
    """Files for `rows` rows: one per `min_rows_per_shard` rows begun, at most `max_shards`;
    one (empty, but with the schema, so readers find the columns) when there are none."""
    return max(1, min(max_shards, math.ceil(rows / min_rows_per_shard)))


def shard_of(uri: str, count: int) -> int:
    """The shard a row goes to: a stable hash of its URI (Python's hash() is salted)."""
    return zlib.crc32(uri.encode("utf-8")) % count


def write_shard(url: str, kind: str, output_format: str, rows: Iterable[dict]) -> int:
    """Write one shard file whole, streaming `rows`; returns how many were written."""
    written = 0
    if output_format == "jsonl":
        with storage.open_file(url, "w") as stream:
            for row in rows:
                stream.write(json.dumps(row, sort_keys=True) + "\n")
                written += 1
        return written
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = tag_rows.PARQUET_SCHEMAS[kind]
    with storage.open_file(url, "wb") as stream, pq.ParquetWriter(stream, schema) as writer:
        batch: list[dict] = []
        for row in rows:
            batch.append(tag_rows.to_parquet_row(row, kind))
            if len(batch) == PARQUET_BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema))
                written, batch = written + len(batch), []
        if batch or not written:  # an empty shard still gets one (empty) row group
            writer.write_table(pa.Table.from_pylist(batch, schema))
            written += len(batch)
    return written


def _keyed_by_shard(row: dict, count: int) -> tuple[int, dict]:
    return shard_of(row["uri"], count), row


def _write_group(
    keyed: tuple[int, Iterable[dict]], count: int, folder: str, kind: str, output_format: str
) -> Iterator[int]:
    index, rows = keyed
    url = storage.join(folder, tag_rows.shard_name(kind, output_format, index, count))
    yield write_shard(url, kind, output_format, rows)


def _write_if_empty(rows: int, folder: str, kind: str, output_format: str) -> None:
    if rows == 0:
        url = storage.join(folder, tag_rows.shard_name(kind, output_format, 0, 1))
        write_shard(url, kind, output_format, [])


class WriteRows(beam.PTransform):
    """Write one row kind under `folder` (the run's staging folder) as its shard files."""

    def __init__(
        self, folder: str, kind: str, output_format: str, max_shards: int, min_rows: int
    ) -> None:
        super().__init__()
        self.where = (folder, kind, output_format)
        # The review queue and the rejects are one file each in JSONL (the contract since v1).
        self.max_shards = max_shards if output_format == "parquet" or kind == "tags" else 1
        self.min_rows = min_rows

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        """Count, pick the shard count, group rows by shard, write each group as one file."""
        total = rows | "CountRows" >> beam.combiners.Count.Globally()
        count = total | "ShardCount" >> beam.Map(shard_count, self.max_shards, self.min_rows)
        _ = total | "WriteEmpty" >> beam.Map(_write_if_empty, *self.where)
        return (
            rows
            | "KeyByShard" >> beam.Map(_keyed_by_shard, AsSingleton(count))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.FlatMap(_write_group, AsSingleton(count), *self.where)
        )
