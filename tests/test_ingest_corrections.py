"""ingest --corrections: the reviewer's label wins (by content hash or uri), `none` excludes
with a reason, images only in corrections are added, counts still add up and the manifest
says how many came from review."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.common import dataset
from components.common.images import content_hash
from components.ingest.core import IngestConfig
from components.ingest.pipeline import run
from components.ingest.sources import SourceError
from tests.conftest import jpeg_bytes, pattern_image, write_pattern_gallery

LABELS = ("horizontal", "square", "vertical")
IN_MEMORY = ["--direct_running_mode=in_memory"]


def _row(decision: str, label: str | None, uri: str | None = None, digest: str | None = None):
    row = {"schema_version": 1, "decision": decision, "label": label, "reviewer": "t",
           "time": "2026-12-01T10:00:00+00:00", "previous_top1": "square",
           "model_version": "1"}  # fmt: skip
    if uri:
        row["uri"] = uri
    if digest:
        row["content_hash"] = digest
    return row


def _labels_by_hash(out: Path) -> dict[str, str]:
    import tensorflow as tf

    manifest = dataset.read_manifest(str(out))
    found = {}
    for shard in out.glob("*.tfrecord"):
        for record in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
            feature = tf.train.Example.FromString(record).features.feature
            digest = feature[dataset.FEATURE_HASH].bytes_list.value[0].decode()
            found[digest] = manifest.labels[feature[dataset.FEATURE_LABEL].int64_list.value[0]]
    return found


def test_corrections_win_exclude_and_add(tmp_path: Path) -> None:
    """Six images per label plus two only in the corrections file."""
    gallery = write_pattern_gallery(tmp_path / "gallery", 6, LABELS)
    relabelled = (gallery / "horizontal" / "horizontal_000.jpg").read_bytes()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "new.jpg").write_bytes(jpeg_bytes(pattern_image(2, seed=777)))
    (inbox / "junk.jpg").write_bytes(jpeg_bytes(pattern_image(1, seed=778)))
    rows = [
        _row("label", "vertical", digest=content_hash(relabelled)),  # by hash only
        _row("none", None, uri=str(gallery / "square" / "square_001.jpg")),
        _row("label", "vertical", uri=str(gallery / "square" / "square_002.jpg")),
        {
            "schema_version": 1,
            "decision": "undo",
            "uri": str(gallery / "square" / "square_002.jpg"),
        },
        _row("accept", "square", uri=str(inbox / "new.jpg")),
        _row("none", None, uri=str(inbox / "junk.jpg")),
    ]
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dataset"

    summary = run(
        str(gallery), str(out), IngestConfig(image_size=32), IN_MEMORY, [str(corrections)]
    )

    assert summary.seen == 20 == summary.accepted + summary.rejected + summary.duplicates
    assert summary.rejected_reasons == {"rejected_in_review": 2}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["review"] == {
        "files": [str(corrections)],
        "decisions": 4,  # the undone one is not in force
        "added": 2,
        "from_review": 2,
        "changed": 2,  # horizontal -> vertical, and the unlabelled new image -> square
        "excluded": 2,
    }
    labels = _labels_by_hash(out)
    assert labels[content_hash(relabelled)] == "vertical"
    assert labels[content_hash((inbox / "new.jpg").read_bytes())] == "square"
    square_002 = content_hash((gallery / "square" / "square_002.jpg").read_bytes())
    assert labels[square_002] == "square"  # the undo put the folder label back
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(Path(r["uri"]).name for r in rejected) == ["junk.jpg", "square_001.jpg"]


def test_correction_labels_are_validated_like_folders(tmp_path: Path) -> None:
    """A label that could not be a folder name is refused, naming the corrections file."""
    gallery = write_pattern_gallery(tmp_path / "gallery", 2, LABELS)
    corrections = tmp_path / "bad.jsonl"
    corrections.write_text(json.dumps(_row("label", "../etc", uri=str(gallery / "x.jpg"))) + "\n")
    with pytest.raises(SourceError, match=r"bad\.jsonl.*'\.\./etc'"):
        run(str(gallery), str(tmp_path / "out"), IngestConfig(image_size=32), IN_MEMORY,
            [str(corrections)])  # fmt: skip


def test_cli_takes_repeatable_corrections(tmp_path: Path) -> None:
    """`gallerytag ingest --corrections A --corrections B`: the later file wins."""
    from gallerytag.cli import cli

    gallery = write_pattern_gallery(tmp_path / "gallery", 4, LABELS)
    uri = str(gallery / "vertical" / "vertical_000.jpg")
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps(_row("none", None, uri=uri)) + "\n")
    second.write_text(json.dumps(_row("label", "square", uri=uri)) + "\n")
    out = tmp_path / "dataset"
    result = CliRunner().invoke(
        cli,
        ["ingest", str(gallery), "--out", str(out), "--image-size", "32",
         "--corrections", str(first), "--corrections", str(second),
         "--direct_running_mode=in_memory"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "from review: 1 labelled (1 changed, 0 added), 0 excluded" in result.output
    assert _labels_by_hash(out)[content_hash(Path(uri).read_bytes())] == "square"
