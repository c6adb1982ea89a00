"""Ingest against what real galleries hold: a malformed corpus, gs://, manifests, duplicates,
stable splits, no leakage, and a killed run."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from components.common import dataset, storage
from components.ingest.core import IngestConfig
from components.ingest.pipeline import run
from tests.conftest import jpeg_bytes, write_pattern_gallery
from tests.corpus import write_malformed_corpus

IN_MEMORY = ["--direct_running_mode=in_memory"]
ROOT = Path(__file__).resolve().parents[1]


def read_back(out: str) -> list[dict]:
    """Every stored example with its split: uri, hash, label and decoded pixels."""
    import tensorflow as tf

    manifest = dataset.read_manifest(out)
    features = {
        dataset.FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
        dataset.FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64),
        dataset.FEATURE_HASH: tf.io.FixedLenFeature([], tf.string),
        dataset.FEATURE_URI: tf.io.FixedLenFeature([], tf.string),
    }
    rows = []
    for split in dataset.SPLITS:
        for record in tf.data.TFRecordDataset(dataset.shard_paths(out, manifest, split)):
            example = tf.io.parse_single_example(record, features)
            rows.append({
                "split": split,
                "uri": example[dataset.FEATURE_URI].numpy().decode(),
                "hash": example[dataset.FEATURE_HASH].numpy().decode(),
                "label": manifest.labels[int(example[dataset.FEATURE_LABEL])],
                "pixels": tf.io.decode_jpeg(example[dataset.FEATURE_IMAGE]).numpy(),
            })  # fmt: skip
    return rows


def _rejections(out: Path | str) -> dict[str, str]:
    lines = storage.read_text(storage.join(str(out), "rejected.jsonl")).splitlines()
    return {row["uri"].rsplit("/", 1)[-1]: row["reason"] for row in map(json.loads, lines)}


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_malformed_corpus_is_fully_accounted_for(tmp_path: Path, mode: str) -> None:
    """No crash; every bad file rejected with its own reason; every odd good file stored."""
    gallery = write_pattern_gallery(tmp_path / "gallery", 6, ("plain", "odd"))
    expected = write_malformed_corpus(gallery / "odd")
    out = tmp_path / "dataset"
    summary = run(str(gallery), str(out), IngestConfig(image_size=64),
                  [f"--direct_running_mode={mode}"])  # fmt: skip

    bad = {name: reason for name, reason in expected.items() if reason}
    good = [name for name, reason in expected.items() if reason is None]
    assert summary.seen == 12 + len(expected)
    assert summary.seen == summary.accepted + summary.rejected + summary.duplicates
    assert _rejections(out) == bad
    stored = {Path(row["uri"]).name: row for row in read_back(str(out))}
    for name in good:
        assert name in stored, f"{name} should have been accepted"
        assert stored[name]["pixels"].shape == (64, 64, 3)
    rotated = stored["exif-rotated.jpg"]["pixels"].astype(int)
    # Upright it is portrait (32x48): padding to a square adds black columns left and right.
    assert rotated[:, :6].mean() < 5 and rotated[:6, 20:44].mean() > 20


def test_gcs_folder_source_and_output(gcs_bucket: str, beam_gcs_anonymous: str, tmp_path):
    """gs:// in, gs:// out, through the real GCS API (emulator)."""
    local = write_pattern_gallery(tmp_path / "g", 5, ("cats", "dogs"))
    for path in sorted(local.rglob("*.jpg")):
        storage.write_bytes(f"gs://{gcs_bucket}/src/{path.relative_to(local)}", path.read_bytes())
    storage.write_bytes(f"gs://{gcs_bucket}/src/dogs/broken.jpg", b"")
    out = f"gs://{gcs_bucket}/datasets/pets"
    summary = run(f"gs://{gcs_bucket}/src", out, IngestConfig(image_size=32), IN_MEMORY)
    assert (summary.seen, summary.accepted, summary.rejected) == (11, 10, 1)
    manifest = dataset.read_manifest(out)
    assert manifest.labels == ["cats", "dogs"] and manifest.totals["seen"] == 11
    # TF cannot be pointed at the emulator: stage the dataset locally to read the shards.
    local = tmp_path / "staged"
    for uri in storage.list_files(out):
        storage.copy(uri, str(local / uri.rsplit("/", 1)[-1]))
    assert {row["label"] for row in read_back(str(local))} == {"cats", "dogs"}
    assert _rejections(out) == {"broken.jpg": "empty_file"}


def test_manifest_with_local_and_gcs_uris(gcs_bucket: str, beam_gcs_anonymous: str, tmp_path):
    """A CSV manifest mixing local paths and gs:// URIs; its split column wins."""
    local = write_pattern_gallery(tmp_path / "g", 4, ("a", "b"))
    lines = ["uri,label,split"]
    for index, path in enumerate(sorted(local.rglob("*.jpg"))):
        if index % 2:
            uri = f"gs://{gcs_bucket}/imgs/{path.name}"
            storage.write_bytes(uri, path.read_bytes())
        else:
            uri = str(path)
        lines.append(f"{uri},{path.parent.name},{'test' if index < 3 else ''}")
    lines.append(f"gs://{gcs_bucket}/imgs/missing.jpg,a,")
    manifest_path = tmp_path / "import.csv"
    manifest_path.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "dataset")
    summary = run(str(manifest_path), out, IngestConfig(image_size=32), IN_MEMORY)
    assert (summary.seen, summary.accepted, summary.rejected) == (9, 8, 1)
    assert _rejections(out) == {"missing.jpg": "unreadable_file"}
    rows = read_back(out)
    assert {row["uri"].split("://")[0] for row in rows if "://" in row["uri"]} == {"gs"}
    forced = {Path(line.split(",")[0]).name for line in lines[1:4]}
    assert {Path(r["uri"]).name for r in rows if r["split"] == "test"} >= forced


def test_manifest_errors_are_clear(tmp_path: Path) -> None:
    """Bad labels or splits in a manifest name the file and line."""
    from components.ingest.sources import SourceError

    bad_label = tmp_path / "a.csv"
    bad_label.write_text("x.jpg,../etc\n")
    with pytest.raises(SourceError, match="line 1"):
        run(str(bad_label), str(tmp_path / "o"))
    bad_split = tmp_path / "b.jsonl"
    bad_split.write_text(json.dumps({"uri": "x.jpg", "label": "a", "split": "holdout"}) + "\n")
    with pytest.raises(SourceError, match="holdout"):
        run(str(bad_split), str(tmp_path / "o"))


def test_broken_datasets_are_refused(tmp_path: Path) -> None:
    """All images rejected, or a label folder without images: a clear error, no manifest."""
    from tests.conftest import write_broken_files

    broken = tmp_path / "broken"
    write_broken_files(broken / "a")
    with pytest.raises(dataset.DatasetError, match=r"no image of .* was accepted.*empty_file 1"):
        run(str(broken), str(tmp_path / "o1"), IngestConfig(image_size=32), IN_MEMORY)
    assert not (tmp_path / "o1" / "manifest.json").exists()
    gallery = write_pattern_gallery(tmp_path / "g", 6, ("a", "b"))
    (gallery / "empty").mkdir()
    with pytest.raises(dataset.DatasetError, match=r"'empty' .* no usable image"):
        run(str(gallery), str(tmp_path / "o2"), IngestConfig(image_size=32), IN_MEMORY)
    assert not (tmp_path / "o2" / "manifest.json").exists()


def test_manifest_encoding_and_types(tmp_path: Path) -> None:
    """A CSV saved with a byte-order mark keeps its header out of the labels; JSONL labels,
    URIs and splits must be strings."""
    from components.ingest.sources import SourceError, resolve_source

    with_bom = tmp_path / "bom.csv"
    with_bom.write_bytes("uri,label\nx.jpg,cat\ny.jpg,dog\n".encode("utf-8-sig"))
    assert resolve_source(str(with_bom)).labels == ["cat", "dog"]
    for bad, shown in (({"label": None}, "null"), ({"label": ["a", "b"]}, '["a", "b"]'),
                       ({"label": "a", "split": 1}, "1")):  # fmt: skip
        manifest = tmp_path / "bad.jsonl"
        manifest.write_text(json.dumps({"uri": "x.jpg", **bad}) + "\n")
        with pytest.raises(
            SourceError, match=rf"line 1: \w+ must be a string, not {re.escape(shown)}"
        ):
            resolve_source(str(manifest))


def _photo_crop(name: str, box: tuple[int, int, int, int], size=None, quality=92) -> bytes:
    image = Image.fromarray(load_sample_image(name)).crop(box)
    if size:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_duplicates_exact_near_and_distinct(tmp_path: Path) -> None:
    """Exact copy across labels: one kept, conflict flagged; a resized re-encode is a near
    duplicate; two different photos are both kept."""
    gallery = tmp_path / "g"
    (gallery / "indoor").mkdir(parents=True)
    (gallery / "outdoor").mkdir()
    original = _photo_crop("china.jpg", (0, 0, 400, 300))
    (gallery / "indoor" / "a_original.jpg").write_bytes(original)
    (gallery / "outdoor" / "b_copy.jpg").write_bytes(original)
    near = _photo_crop("china.jpg", (0, 0, 400, 300), size=(300, 225), quality=70)
    (gallery / "outdoor" / "c_near.jpg").write_bytes(near)
    (gallery / "outdoor" / "d_other.jpg").write_bytes(_photo_crop("flower.jpg", (0, 0, 400, 300)))
    (gallery / "indoor" / "e_other.jpg").write_bytes(_photo_crop("china.jpg", (200, 100, 600, 400)))
    out = tmp_path / "d"
    summary = run(str(gallery), str(out), IngestConfig(image_size=32), IN_MEMORY)
    assert (summary.accepted, summary.duplicates) == (3, 2)
    rows = {Path(r["uri"]).name: r for r in map(json.loads, (out / "duplicates.jsonl").open())}
    assert rows["b_copy.jpg"]["kind"] == "exact" and rows["b_copy.jpg"]["label_conflict"]
    assert rows["c_near.jpg"]["kind"] == "near"
    assert Path(rows["c_near.jpg"]["kept_uri"]).name == "a_original.jpg"
    kept = {Path(r["uri"]).name for r in read_back(str(out))}
    assert kept == {"a_original.jpg", "d_other.jpg", "e_other.jpg"}


def test_splits_are_stable_stratified_and_leak_free(tmp_path: Path) -> None:
    """Adding images never moves old ones; each label follows 70/10/20; no hash in two splits."""
    gallery = write_pattern_gallery(tmp_path / "g", 60, ("h", "s", "v"))
    first = str(tmp_path / "d1")
    run(str(gallery), first, IngestConfig(image_size=32), IN_MEMORY)
    before = {r["hash"]: r["split"] for r in read_back(first)}
    extra = write_pattern_gallery(tmp_path / "extra", 30, ("h", "s", "v"))
    for path in extra.rglob("*.jpg"):
        shutil.copy(path, gallery / path.parent.name / f"new_{path.name}")
    second = str(tmp_path / "d2")
    run(str(gallery), second, IngestConfig(image_size=32), IN_MEMORY)
    after = read_back(second)
    assert all(before[r["hash"]] == r["split"] for r in after if r["hash"] in before)
    assert len({r["hash"] for r in after}) == len(after)  # no image in two splits
    for label in ("h", "s", "v"):
        splits = [r["split"] for r in after if r["label"] == label]
        shares = {s: splits.count(s) / len(splits) for s in dataset.SPLITS}
        assert abs(shares["train"] - 0.7) < 0.15 and abs(shares["test"] - 0.2) < 0.12, shares


def test_small_class_policy(tmp_path: Path) -> None:
    """A label too small to reach every split warns by default and fails when asked to."""
    gallery = write_pattern_gallery(tmp_path / "g", 12, ("big",))
    tiny = gallery / "tiny"
    tiny.mkdir()
    (tiny / "only.jpg").write_bytes(jpeg_bytes(np.full((32, 32, 3), 200, np.uint8)))
    summary = run(str(gallery), str(tmp_path / "d"), IngestConfig(image_size=32), IN_MEMORY)
    assert any("'tiny'" in warning for warning in summary.warnings)
    with pytest.raises(dataset.DatasetError, match="tiny"):
        run(str(gallery), str(tmp_path / "e"),
            IngestConfig(image_size=32, small_class_policy="error"), IN_MEMORY)  # fmt: skip
    assert not (tmp_path / "e" / "manifest.json").exists()


def test_killed_ingest_never_looks_complete(tmp_path: Path) -> None:
    """SIGKILL a re-ingest into an existing dataset: the folder is complete-and-consistent or
    has no manifest, never a manifest next to missing shards."""
    gallery = write_pattern_gallery(tmp_path / "g", 40, ("a", "b"))
    out = tmp_path / "d"
    run(str(gallery), str(out), IngestConfig(image_size=32), IN_MEMORY)
    code = (
        "import sys; from components.ingest.core import IngestConfig;"
        "from components.ingest.pipeline import run;"
        "run(sys.argv[1], sys.argv[2], IngestConfig(image_size=48))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, "-c", code, str(gallery), str(out)], cwd=ROOT,
                               env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(p.is_file() for p in out.glob(".staging-*/**/*")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    parent = psutil.Process(process.pid)
    for child in parent.children(recursive=True):
        child.kill()
    parent.kill()
    process.wait()
    if (out / "manifest.json").exists():
        manifest = dataset.read_manifest(str(out))
        for split in dataset.SPLITS:
            dataset.shard_paths(str(out), manifest, split)  # every listed shard is there
        assert manifest.image_size == 32  # the old, complete dataset


@pytest.mark.slow
@pytest.mark.parametrize("point", ["move:0", "move:3", "marker"])
def test_killed_inside_the_ingest_commit_then_rerun(tmp_path: Path, point: str) -> None:
    """SIGKILL a re-ingest inside its commit: never a manifest beside missing or foreign
    shards; the rerun leaves the new dataset, its counts equal to the records on disk."""
    gallery = write_pattern_gallery(tmp_path / "g", 20, ("a", "b"))
    out = tmp_path / "d"
    run(str(gallery), str(out), IngestConfig(image_size=32), IN_MEMORY)
    arguments = json.dumps({"source": str(gallery), "out": str(out), "image_size": 48})
    step = [sys.executable, "-m", "tests.kill_points"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    quiet = {"cwd": ROOT, "env": env, "stderr": subprocess.DEVNULL, "timeout": 300}
    assert subprocess.run([*step, point, "ingest", arguments], **quiet).returncode == -9
    if point == "marker":
        _assert_complete(out, 48)
    else:
        assert not (out / "manifest.json").exists()
    assert subprocess.run([*step, "none", "ingest", arguments], **quiet).returncode == 0
    _assert_complete(out, 48)
    assert not list(out.glob(".staging-*")) and not (out / "_CLAIM.json").exists()


def _assert_complete(out: Path, image_size: int) -> None:
    """The manifest's shards are exactly the shards on disk and hold its counts."""
    manifest = dataset.read_manifest(str(out))
    assert manifest.image_size == image_size
    listed = sorted(name for names in manifest.shards.values() for name in names)
    assert listed == sorted(p.name for p in out.glob("*.tfrecord"))
    for split in dataset.SPLITS:
        records = sum(
            dataset.count_records(p) for p in dataset.shard_paths(str(out), manifest, split)
        )
        assert records == manifest.split_size(split)
    assert manifest.totals["accepted"] == 40
