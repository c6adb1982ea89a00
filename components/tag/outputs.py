"""Beam sinks of the tag rows: every row kind sharded by URI into as many files as its rows
fill (`shard_count`), in JSONL or Parquet (layout: `components/common/tag_rows.py`). Rows
are hashed into buckets and the buckets packed into the shards (`shard_plan`): a plain
hash modulo the count left a shard empty by chance (11 rows over 3 files: ~3% of runs).

Why not Beam's file sinks: with a fixed `num_shards` they write every shard even when it is
empty (4 files for 12 rows: 3 empty), and with `num_shards=0` the count is the number of
bundles the runner happened to make (2 files for 12 rows locally, measured; many more on
Dataflow). Here the count is known before the first file is opened, and the shard names
carry the real total.
"""

from __future__ import annotations

import heapq
import json
import math
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from components.common import storage, tag_rows

PARQUET_BATCH = 10_000  # rows per Parquet write: bounds the writer's memory
# Rows are hashed into this many buckets, which are packed into the shards: fine enough to
# fill every shard evenly, small enough to pass the plan as a side input.
BUCKETS = 4096


def shard_count(rows: int, max_shards: int, min_rows_per_shard: int) -> int:
    """Files for `rows` rows: one per `min_rows_per_shard` rows begun, at most `max_shards`;
    one (empty, but with the schema, so readers find the columns) when there are none."""
    return max(1, min(max_shards, math.ceil(rows / min_rows_per_shard)))


def bucket_of(uri: str) -> int:
    """The hash bucket a row falls in: a stable hash of its URI (Python's hash() is salted)."""
    return zlib.crc32(uri.encode("utf-8")) % BUCKETS


def shard_plan(bucket_rows: Iterable[tuple[int, int]], count: int) -> dict[int, int]:
    """Bucket -> shard, largest bucket first onto the least-filled shard (LPT), so every
    shard gets rows whenever `count` buckets have any, and the shards come out even."""
    loads = [(0, shard) for shard in range(count)]
    plan = {}
    for bucket, rows in sorted(bucket_rows, key=lambda item: (-item[1], item[0])):
        load, shard = heapq.heappop(loads)
        plan[bucket] = shard
        heapq.heappush(loads, (load + rows, shard))
    return plan


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


def _keyed_by_bucket(row: dict) -> tuple[int, dict]:
    return bucket_of(row["uri"]), row


def _total(bucket_rows: list[tuple[int, int]]) -> int:
    return sum(rows for _, rows in bucket_rows)


def _every_shard(count: int) -> Iterator[tuple[int, None]]:
    return ((index, None) for index in range(count))


def _to_shard(keyed: tuple[int, dict], plan: dict[int, int]) -> tuple[int, dict]:
    return plan[keyed[0]], keyed[1]


def _write_group(
    keyed: tuple[int, Iterable[dict | None]], count: int, folder: str, kind: str, output_format: str
) -> Iterator[int]:
    index, rows = keyed
    url = storage.join(folder, tag_rows.shard_name(kind, output_format, index, count))
    yield write_shard(url, kind, output_format, (row for row in rows if row is not None))


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
        """Count rows per hash bucket, pick the shard count and the bucket -> shard plan,
        then group rows by shard and write each group as one file. Every shard index gets
        a `None` marker, so each of the `count` files named `-of-count` exists even in the
        rare case that fewer than `count` buckets hold rows (and the one file of a kind
        with no rows, with its schema, so readers find the columns)."""
        bucketed = rows | "KeyByBucket" >> beam.Map(_keyed_by_bucket)
        sizes = (
            bucketed
            | "RowsPerBucket" >> beam.combiners.Count.PerKey()
            | "AllBuckets" >> beam.combiners.ToList()
        )
        total = sizes | "CountRows" >> beam.Map(_total)
        count = total | "ShardCount" >> beam.Map(shard_count, self.max_shards, self.min_rows)
        plan = sizes | "ShardPlan" >> beam.Map(shard_plan, AsSingleton(count))
        keyed = bucketed | "KeyByShard" >> beam.Map(_to_shard, AsSingleton(plan))
        markers = count | "EveryShard" >> beam.FlatMap(_every_shard)
        return (
            (keyed, markers)
            | "WithEveryShard" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.FlatMap(_write_group, AsSingleton(count), *self.where)
        )
