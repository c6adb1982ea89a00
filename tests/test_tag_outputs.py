"""Tag outputs any tool can read: a Parquet folder per row kind read in one call by pyarrow,
pandas and DuckDB, no empty shards, absolute URIs, `tagged_at`, `--top-k`, and every row of
a real run valid against its kind's JSON Schema (components/tag/*_row.schema.json)."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jsonschema import ValidationError

from components.common import tag_rows
from components.common.tracking import TaggerSpec
from components.tag.outputs import WriteRows, bucket_of, shard_count, shard_plan
from components.tag.pipeline import TagOutputs, check_committed, run
from components.tag.policy import TagPolicy
from tests.conftest import write_broken_files
from tests.tag_schemas import validate_row
from tests.test_tag import _gray, make_brightness_tagger

IN_MEMORY = ["--direct_running_mode=in_memory"]
POLICY = TagPolicy(min_score=0.5, min_margin=0.1)


@pytest.fixture(scope="module")
def brightness_tagger(tmp_path_factory: pytest.TempPathFactory) -> TaggerSpec:
    """The real tiny Keras tagger of test_tag.py (bright or dark by mean pixel)."""
    return make_brightness_tagger(tmp_path_factory.mktemp("model"))


def _inbox(root: Path) -> dict[str, str]:
    """10 clear images, 1 coin toss (review) and 3 broken files; name -> expected status."""
    root.mkdir(parents=True)
    expected = {}
    for index in range(10):
        (root / f"{index}.jpg").write_bytes(_gray(20 if index % 2 else 235, index))
        expected[f"{index}.jpg"] = "auto"
    (root / "middle.jpg").write_bytes(_gray(128, 99))
    expected["middle.jpg"] = "review"
    for name in write_broken_files(root / "broken"):
        expected[name] = "rejected"
    return expected


def test_shard_count_has_no_empty_shards() -> None:
    """One file per min_rows begun, at most max_shards, one (with the schema) for none."""
    assert [shard_count(n, 4, 10) for n in (0, 1, 10, 11, 35, 1000)] == [1, 1, 1, 2, 4, 4]


def test_shard_plan_fills_every_shard_evenly() -> None:
    """Over 300 random sets of 11 URIs, packing buckets into 3 shards never leaves one empty
    (a CRC32 modulo 3 did in ~3% of sets) and no shard holds over one row more than another."""
    import random
    from collections import Counter

    chooser = random.Random(0)
    for _ in range(300):
        uris = [f"/tmp/{chooser.getrandbits(64):x}/{index}.jpg" for index in range(11)]
        sizes = Counter(bucket_of(uri) for uri in uris)
        plan = shard_plan(sizes.items(), 3)
        loads = [sum(1 for uri in uris if plan[bucket_of(uri)] == s) for s in range(3)]
        assert min(loads) >= 1 and max(loads) - min(loads) <= max(sizes.values()), loads


def test_every_named_shard_is_written_and_holds_rows(tmp_path: Path) -> None:
    """Rows whose CRC32 modulo 3 never hits 2 (the old scheme left tags-00002 missing) fill
    all three files; no rows at all still give one file, with the schema."""
    import zlib

    import apache_beam as beam
    import pyarrow.parquet as pq

    uris = [f"/g/{i}.jpg" for i in range(400) if zlib.crc32(f"/g/{i}.jpg".encode()) % 3 != 2]
    rows = [{"uri": uri, "status": "rejected", "reason": "test"} for uri in uris[:12]]
    for name, given in (("some", rows), ("none", [])):
        folder = tmp_path / name
        with beam.Pipeline(argv=IN_MEMORY) as pipeline:
            _ = (
                pipeline
                | beam.Create(given)
                | WriteRows(str(folder), "rejected", "parquet", max_shards=8, min_rows=4)
            )
        files = sorted((folder / "rejected").iterdir())
        counts = [pq.read_metadata(f).num_rows for f in files]
        if given:
            assert [f.name for f in files] == [
                f"rejected-{i:05d}-of-00003.parquet" for i in range(3)
            ]
            assert counts == [4, 4, 4]
        else:
            assert [f.name for f in files] == ["rejected-00000-of-00001.parquet"] and counts == [0]
            assert "uri" in pq.read_schema(files[0]).names


def test_parquet_folder_reads_as_one_dataset(brightness_tagger, tmp_path, monkeypatch) -> None:
    """Parquet mode: out/tags is read in one call by pyarrow.dataset, pandas and DuckDB with
    exactly the tag rows; review and rejected rows sit in their own folders in the same
    format; shards hold rows; a relative source still gives absolute uris."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    expected = _inbox(tmp_path / "inbox")
    monkeypatch.chdir(tmp_path)  # relative source and output, as a user types them
    outputs = TagOutputs(format="parquet", shards=8, min_rows_per_shard=4)
    summary = run("inbox", "out", brightness_tagger, POLICY, outputs, IN_MEMORY)
    assert (summary.auto, summary.review, summary.rejected) == (10, 1, 3)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS.json", "rejected", "review", "tags"]
    tags = out / "tags"
    shards = sorted(p.name for p in tags.iterdir())
    assert shards == [f"tags-{i:05d}-of-00003.parquet" for i in range(3)]  # 11 rows, 4 per file

    arrow = ds.dataset(str(tags)).to_table()
    frame = pd.read_parquet(tags)
    duck = duckdb.sql(f"SELECT uri, status, tagged_at FROM read_parquet('{tags}')").fetchall()
    assert arrow.num_rows == len(frame) == len(duck) == 11
    assert all(ds.dataset(str(tags / name)).count_rows() > 0 for name in shards)
    assert str(frame["tagged_at"].dtype).startswith("datetime64") and "UTC" in str(
        frame["tagged_at"].dtype
    )
    uris = set(frame["uri"])
    assert uris == {uri for uri, _, _ in duck} == set(arrow.column("uri").to_pylist())
    for uri in uris:
        assert os.path.isabs(uri) and uri == os.path.normpath(uri) and Path(uri).is_file()
    assert {Path(u).name: s for u, s in zip(frame["uri"], frame["status"], strict=True)} == {
        name: status for name, status in expected.items() if status != "rejected"
    }
    for kind, rows in (("review", 1), ("rejected", 3)):
        folder = out / kind
        assert len(pd.read_parquet(folder)) == rows == ds.dataset(str(folder)).count_rows()
        assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}')").fetchall() == [(rows,)]
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["format"] == "parquet" and success["out"] == str(out)
    assert success["files"]["tags"] == "tags/tags-*.parquet"


def test_jsonl_small_run_writes_no_empty_shards(brightness_tagger, tmp_path: Path) -> None:
    """--shards 4 over 11 rows: one file (not 3 empty ones); with 4 rows per file, 3 full files."""
    _inbox(tmp_path / "inbox")
    out = tmp_path / "out"
    run(str(tmp_path / "inbox"), str(out), brightness_tagger, POLICY, TagOutputs(shards=4),
        IN_MEMORY)  # fmt: skip
    assert sorted(p.name for p in out.glob("tags-*")) == ["tags-00000-of-00001.jsonl"]
    outputs = TagOutputs(shards=4, min_rows_per_shard=4)
    run(str(tmp_path / "inbox"), str(out), brightness_tagger, POLICY, outputs, IN_MEMORY)
    shards = sorted(out.glob("tags-*"))
    assert [p.name for p in shards] == [f"tags-{i:05d}-of-00003.jsonl" for i in range(3)]
    lines = [len(p.read_text().splitlines()) for p in shards]
    assert all(lines) and sum(lines) == 11
    assert (out / "review.jsonl").is_file() and (out / "rejected.jsonl").is_file()


@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_every_row_of_a_real_run_matches_its_schema(
    brightness_tagger, tmp_path: Path, output_format: str
) -> None:
    """Tag, review and rejected rows of a real run (read back in either format) are valid
    against their own schema, with a UTC tagged_at inside the run; the schemas do refuse a
    row without a time, with a relative uri, or of another kind."""
    _inbox(tmp_path / "inbox")
    out = tmp_path / "out"
    before = datetime.now(UTC)
    outputs = TagOutputs(format=output_format)
    summary = run(str(tmp_path / "inbox"), str(out), brightness_tagger, POLICY, outputs, IN_MEMORY)
    after = datetime.now(UTC)
    rows = {kind: list(tag_rows.read_rows(str(out), kind)) for kind in tag_rows.KINDS}
    assert (
        [len(rows[kind]) for kind in tag_rows.KINDS]
        == [11, 1, 3]
        == [
            summary.auto + summary.review,
            summary.review,
            summary.rejected,
        ]
    )
    for kind, kind_rows in rows.items():
        for row in kind_rows:
            validate_row(row, kind)
            moment = datetime.fromisoformat(row["tagged_at"])
            assert row["tagged_at"].endswith("Z") and moment.utcoffset().total_seconds() == 0
            assert before.replace(microsecond=0) <= moment <= after
    tag, review, rejected = rows["tags"][0], rows["review"][0], rows["rejected"][0]
    for broken in (
        {k: v for k, v in tag.items() if k != "tagged_at"},
        {**tag, "uri": "inbox/0.jpg"},
        {**tag, "tagged_at": "2026-12-01T13:02:00+01:00"},
    ):
        with pytest.raises(ValidationError):
            validate_row(broken, "tags")
    with pytest.raises(ValidationError):
        validate_row({**review, "status": "auto"}, "review")
    with pytest.raises(ValidationError):
        validate_row(rejected, "tags")
    with pytest.raises(ValidationError):
        validate_row({**rejected, "reason": "because"}, "rejected")


def test_top_k_rows_and_a_changed_k_retags(brightness_tagger, tmp_path: Path) -> None:
    """The policy's top_k is how many labels a row lists; an incremental run with another k
    carries nothing (an old row cannot grow labels it did not keep)."""
    source = tmp_path / "inbox"
    source.mkdir()
    for index in range(3):
        (source / f"{index}.jpg").write_bytes(_gray(30, index))
    out = tmp_path / "out"
    incremental = TagOutputs(incremental=True)
    one = TagPolicy(min_score=0.5, min_margin=0.1, top_k=1)
    run(str(source), str(out), brightness_tagger, one, incremental, IN_MEMORY)
    assert [len(r["labels"]) for r in tag_rows.read_rows(str(out), "tags")] == [1, 1, 1]
    two = TagPolicy(min_score=0.5, min_margin=0.1, top_k=2)
    summary = run(str(source), str(out), brightness_tagger, two, incremental, IN_MEMORY)
    assert summary.carried == 0
    labels = [r["labels"] for r in tag_rows.read_rows(str(out), "tags")]
    assert all([entry["label"] for entry in row] == ["dark", "bright"] for row in labels)
    assert run(str(source), str(out), brightness_tagger, two, incremental, IN_MEMORY).carried == 3


def test_top_k_and_shard_options(tmp_path: Path) -> None:
    """--top-k and --min-rows-per-shard are declared options: 0 is refused for each."""
    from click.testing import CliRunner

    from gallerytag.cli import cli

    for option in ("--top-k", "--min-rows-per-shard"):
        args = ["tag", str(tmp_path), "--model", "m", "--out", str(tmp_path / "o"), option, "0"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and option in result.output, result.output


def test_incremental_across_formats_and_the_committed_check(brightness_tagger, tmp_path):
    """JSONL then Parquet then JSONL into one --out: each run carries the previous rows
    whatever their format, leaves only its own layout, and the commit's count check reads
    either format (a missing row is caught)."""
    expected = _inbox(tmp_path / "inbox")
    out = tmp_path / "out"
    source = str(tmp_path / "inbox")
    jsonl, parquet = TagOutputs(incremental=True), TagOutputs("parquet", incremental=True)
    run(source, str(out), brightness_tagger, POLICY, jsonl, IN_MEMORY)
    second = run(source, str(out), brightness_tagger, POLICY, parquet, IN_MEMORY)
    assert second.carried == 11 and second.seen == len(expected)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS.json", "rejected", "review", "tags"]
    from components.review.queue import load_queue

    assert [Path(item.uri).name for item in load_queue(str(out)).items] == ["middle.jpg"]
    files = [str(out / relative) for relative in tag_rows.output_files(str(out))]
    check_committed(files, second)  # the real files match the real counts
    off_by_one = dataclasses.replace(second, rejected=second.rejected + 1)
    with pytest.raises(RuntimeError, match="rejected rows: 3 on disk, 4 counted"):
        check_committed(files, off_by_one)
    third = run(source, str(out), brightness_tagger, POLICY, jsonl, IN_MEMORY)
    assert third.carried == 11
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_SUCCESS.json", "rejected.jsonl", "review.jsonl", "tags-00000-of-00001.jsonl"]


def test_rows_of_an_older_schema_are_tagged_again(brightness_tagger, tmp_path: Path) -> None:
    """Rows without tagged_at (schema 1) are never carried into a schema 2 output."""
    source = tmp_path / "inbox"
    source.mkdir()
    for index in range(2):
        (source / f"{index}.jpg").write_bytes(_gray(30, index))
    out = tmp_path / "out"
    outputs = TagOutputs(incremental=True)
    run(str(source), str(out), brightness_tagger, POLICY, outputs, IN_MEMORY)
    shard = out / "tags-00000-of-00001.jsonl"
    old = [json.loads(line) for line in shard.read_text().splitlines()]
    shard.write_text("".join(json.dumps({**r, "schema_version": 1}) + "\n" for r in old))
    assert run(str(source), str(out), brightness_tagger, POLICY, outputs, IN_MEMORY).carried == 0
    assert {r["schema_version"] for r in tag_rows.read_rows(str(out), "tags")} == {2}


def test_parquet_on_gcs_reads_back_and_carries(
    brightness_tagger: TaggerSpec, gcs_bucket: str, beam_gcs_anonymous: str
) -> None:
    """Parquet folders on gs:// (real GCS API, emulator): the rows read back with their gs://
    uris kept as listed, and an incremental run carries them."""
    from components.common import storage

    prefix = f"gs://{gcs_bucket}/gallery"
    for index in range(3):
        storage.write_bytes(f"{prefix}/img{index}.jpg", _gray(230 if index % 2 else 25, index))
    storage.write_bytes(f"{prefix}/notes.jpg", b"not an image")
    out = f"gs://{gcs_bucket}/tagged/"
    outputs = TagOutputs("parquet", incremental=True)
    run(prefix, out, brightness_tagger, POLICY, outputs, IN_MEMORY)
    names = sorted(u.split("/tagged/", 1)[1] for u in storage.list_files(out.rstrip("/")))
    assert names == ["_SUCCESS.json"] + [
        f"{kind}/{kind}-00000-of-00001.parquet" for kind in ("rejected", "review", "tags")
    ]
    rows = list(tag_rows.read_rows(out, "tags"))
    assert sorted(r["uri"] for r in rows) == [f"{prefix}/img{i}.jpg" for i in range(3)]
    for row in rows:
        validate_row(row, "tags")
    again = run(prefix, out, brightness_tagger, POLICY, outputs, IN_MEMORY)
    assert again.carried == 3 and again.rejected == 1
