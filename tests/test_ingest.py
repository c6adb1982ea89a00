"""Ingest pipeline on a real DirectRunner: every input accounted for, shards readable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.common import dataset
from components.ingest.core import (
    PHASH_SIZE,
    IngestConfig,
    assign_split,
    close_pairs,
    find_duplicates,
    pack_hashes,
    split_bounds,
    split_counts,
    split_key,
    validate_label,
)
from components.ingest.packs import PackWriter, pack_path
from components.ingest.pipeline import run
from components.ingest.steps import MakeExamples
from tests.conftest import jpeg_bytes, pattern_image, write_broken_files, write_pattern_gallery

LABELS = ("horizontal", "square", "vertical")
IN_MEMORY = ["--direct_running_mode=in_memory"]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _count_records(files: list[str]) -> int:
    import tensorflow as tf

    return sum(1 for _ in tf.data.TFRecordDataset(files))


@pytest.fixture
def gallery(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """12 images per class, the broken trio, a cross-label duplicate and a stray root file."""
    root = write_pattern_gallery(tmp_path / "gallery", 12, LABELS)
    expected = write_broken_files(root / "square")
    shutil.copy(root / "horizontal" / "horizontal_000.jpg", root / "vertical" / "copy.jpg")
    shutil.copy(root / "square" / "square_001.jpg", root / "square" / "again.jpg")
    (root / "README.txt").write_text("files at the top level have no label")
    return root, expected


def test_every_input_is_accounted_for(gallery: tuple[Path, dict[str, str]], tmp_path: Path):
    """seen = accepted + rejected + duplicates; each broken file rejected with its reason."""
    root, expected = gallery
    out = tmp_path / "dataset"
    summary = run(str(root), str(out), IngestConfig(image_size=32), beam_args=IN_MEMORY)

    assert summary.seen == 3 * 12 + 3 + 2 + 1
    assert summary.accepted == 36
    assert summary.duplicates == 2
    assert summary.rejected == 4
    assert summary.seen == summary.accepted + summary.rejected + summary.duplicates

    rejected = {Path(row["uri"]).name: row["reason"] for row in _read_jsonl(out / "rejected.jsonl")}
    assert rejected == {**expected, "README.txt": "not_in_label_folder"}

    duplicates = _read_jsonl(out / "duplicates.jsonl")
    conflict = next(d for d in duplicates if Path(d["uri"]).name in ("copy.jpg",))
    assert conflict["label_conflict"] is True
    same_label = next(d for d in duplicates if d["label"] == d["kept_label"] == "square")
    assert same_label["label_conflict"] is False

    manifest = dataset.read_manifest(str(out))
    assert manifest.labels == list(LABELS)
    assert manifest.totals["seen"] == summary.seen
    for split in dataset.SPLITS:
        files = dataset.shard_paths(str(out), manifest, split)
        assert len(files) >= 1
        assert _count_records(files) == manifest.split_size(split)
    assert sum(manifest.split_size(s) for s in dataset.SPLITS) == 36
    assert not list(out.glob(".staging-*"))


def test_rerun_gives_the_same_dataset_hash(gallery, tmp_path: Path) -> None:
    """Same input, same hash, even with a different runner mode and shard count."""
    root, _ = gallery
    first = run(str(root), str(tmp_path / "a"), IngestConfig(image_size=32), beam_args=IN_MEMORY)
    config = IngestConfig(image_size=32, shards_per_split=2)
    second = run(str(root), str(tmp_path / "b"), config, beam_args=["--direct_num_workers=2"])
    assert first.dataset_hash == second.dataset_hash
    assert first.counts == second.counts
    manifest = dataset.read_manifest(str(tmp_path / "b"))
    assert all(len(manifest.shards[split]) == 2 for split in dataset.SPLITS)
    other = run(str(root), str(tmp_path / "c"), IngestConfig(image_size=48), beam_args=IN_MEMORY)
    assert other.dataset_hash != first.dataset_hash


def _keys(count: int, start: int = 0) -> list[int]:
    import hashlib

    return [split_key(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(start, count)]


def _splits(keys: list[int], ratios=(0.7, 0.1, 0.2)) -> list[str]:
    bounds = split_bounds({"a": keys}, ratios)["a"]
    return [assign_split(key, bounds) for key in keys]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 13, 14, 100, 1001])
def test_split_is_stratified_with_exact_counts(n: int) -> None:
    """Every label gets its share of each split, whatever its size (no 7-vs-14 luck)."""
    splits = _splits(_keys(n))
    counts = tuple(splits.count(s) for s in dataset.SPLITS)
    assert counts == split_counts(n, (0.7, 0.1, 0.2))
    assert sum(counts) == n
    if n >= 3:
        assert min(counts) >= 1
    for split, ratio in zip(dataset.SPLITS, (0.7, 0.1, 0.2), strict=True):
        assert abs(splits.count(split) - n * ratio) <= (1.0 if n >= 10 else 2.0)


def test_split_counts_examples() -> None:
    """Largest remainder, then one image for each split asked for."""
    assert split_counts(5, (0.7, 0.1, 0.2)) == (3, 1, 1)
    assert split_counts(10, (0.7, 0.1, 0.2)) == (7, 1, 2)
    assert split_counts(2, (0.7, 0.1, 0.2)) == (2, 0, 0)
    assert split_counts(10, (1.0, 0.0, 0.0)) == (10, 0, 0)
    assert split_counts(9, (0.8, 0.2, 0.0)) == (7, 2, 0)


def test_split_is_deterministic_and_stable_when_images_are_added() -> None:
    """Same images, same split; adding k images moves at most 2k of the old ones."""
    keys = _keys(300)
    before = dict(zip(keys, _splits(keys), strict=True))
    assert dict(zip(keys, _splits(list(reversed(keys))[::-1]), strict=True)) == before
    for added in (1, 5, 40):
        grown = keys + _keys(300 + added, start=300)
        after = dict(zip(grown, _splits(grown), strict=True))
        moved = sum(after[key] != split for key, split in before.items())
        assert moved <= 2 * added, (added, moved)


def test_split_seed_draws_another_split() -> None:
    """A different seed gives a different, equally stratified split (for seeded benchmarks)."""
    import hashlib

    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    by_seed = {}
    for seed in (0, 1):
        keys = [split_key(h, seed) for h in hashes]
        by_seed[seed] = _splits(keys)
        assert [by_seed[seed].count(s) for s in dataset.SPLITS] == [35, 5, 10]
    assert by_seed[0] != by_seed[1]


@pytest.mark.parametrize("max_distance", [0, 3, 10, 40])
def test_close_pairs_finds_exactly_the_pairs_brute_force_finds(max_distance: int) -> None:
    """Banded search == all-pairs comparison, on random hashes plus planted near copies
    (flipped bits spread over every band, at and just beyond the distance)."""
    rng = np.random.default_rng(max_distance)
    bits = PHASH_SIZE * PHASH_SIZE
    hashes = [int(rng.integers(0, 2**63)) << 193 | int(rng.integers(0, 2**63)) for _ in range(300)]
    for index in range(0, 120, 2):
        flips = rng.choice(bits, size=max(0, max_distance + index % 4 - 1), replace=False)
        hashes.append(hashes[index] ^ sum(1 << int(bit) for bit in flips))
    for index in range(120, 140):  # exactly max_distance flips, evenly spread: the worst case
        width = bits // max(1, max_distance)
        spread = [band * width + index % width for band in range(max_distance)]
        hashes.append(hashes[index] ^ sum(1 << bit for bit in spread))
    hashes += [hashes[5], hashes[5]]  # identical hashes are distance 0
    brute = {
        (i, j)
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if (hashes[i] ^ hashes[j]).bit_count() <= max_distance
    }
    assert len(brute) >= 30
    found = close_pairs(pack_hashes(hashes), max_distance)
    assert {(int(i), int(j)) for i, j in found} == brute and len(found) == len(brute)


@pytest.mark.parametrize("label", ["", "  ", "a/b", "..", "x..y", "tab\there", "new\nline"])
def test_bad_labels_are_refused(label: str) -> None:
    """Labels that are unsafe as folder or class names raise a clear error."""
    with pytest.raises(ValueError, match="is not allowed"):
        validate_label(label)


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    """A typo in the source path fails before any pipeline starts."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(str(tmp_path / "nope"), str(tmp_path / "out"))


def test_a_folder_without_label_folders_is_a_clear_error(tmp_path: Path) -> None:
    """Images dumped flat into the source need label folders; say so."""
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="no class sub-folders"):
        run(str(tmp_path / "flat"), str(tmp_path / "out"))


def test_incomplete_dataset_is_refused(tmp_path: Path) -> None:
    """A directory without manifest.json (e.g. a killed ingest) is not a dataset."""
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train-00000-of-00004.tfrecord").write_bytes(b"")
    with pytest.raises(dataset.DatasetError, match=r"manifest\.json is missing"):
        dataset.read_manifest(str(tmp_path / "half"))


def test_staged_pixels_round_trip_and_a_lost_pack_is_recorded(tmp_path: Path) -> None:
    """MakeExamples reads back exactly what PackWriter appended, skips the rows the plan
    drops, and a missing or cut-short pack gives a 'late' row naming the pack and image
    (run() turns those into one clear error), no crash."""
    import tensorflow as tf

    staging = str(tmp_path)
    pack = PackWriter(staging)
    rows = [
        pack.append(jpeg, {"uri": f"gs://b/{i}.jpg", "label": label, "hash": f"{i:02x}" * 32,
                           "split": split})
        for i, (jpeg, label, split) in enumerate(
            [(b"first jpeg", "winter", None), (b"second, longer jpeg", "summer", "test"),
             (b"third", "winter", "validation")]
        )
    ]  # fmt: skip
    pack.close()
    assert rows == [0, 1, 2]
    make_examples = MakeExamples(staging, {"winter": 0, "summer": 1}, split_seed=0)
    bounds = {"winter": (0, 0), "summer": (0, 0)}  # everything without a manifest split: test
    outputs = list(make_examples.process(pack.name, {pack.name: frozenset({0})}, bounds))
    examples = [output for output in outputs if not hasattr(output, "tag")]
    kept = [output.value for output in outputs if getattr(output, "tag", None) == "kept"]
    assert [split for split, _ in examples] == [
        dataset.SPLITS.index("test"), dataset.SPLITS.index("validation")
    ]  # fmt: skip
    parsed = [tf.train.Example.FromString(data).features.feature for _, data in examples]
    assert [f[dataset.FEATURE_IMAGE].bytes_list.value for f in parsed] == [
        [b"second, longer jpeg"], [b"third"]
    ]  # fmt: skip
    assert [f[dataset.FEATURE_LABEL].int64_list.value for f in parsed] == [[1], [0]]
    assert [row["split"] for row in kept] == ["test", "validation"]

    [late] = list(make_examples.process("gone.pack", {}, bounds))
    assert late.tag == MakeExamples.LATE and late.value["pack"] == "gone.pack"
    packed = Path(pack_path(staging, pack.name))
    packed.write_bytes(packed.read_bytes()[:-3])  # the third image loses its last bytes
    *_, late = make_examples.process(pack.name, {}, bounds)
    assert late.tag == MakeExamples.LATE and late.value["uri"] == "gs://b/2.jpg"
    assert "ends before byte" in late.value["error"]


def test_duplicates_are_found_by_content_then_by_perceptual_hash() -> None:
    """Exact groups keep the smallest (URI, label); near groups are formed among the kept;
    one URI listed twice (as a manifest may) is one exact duplicate, not two."""
    rng = np.random.default_rng(3)
    base = [int(rng.integers(0, 2**63)) << 193 | int(rng.integers(0, 2**63)) for _ in range(4)]
    uris = ["gs://b/a.jpg", "gs://b/a.jpg", "gs://b/c.jpg", "gs://b/b.jpg", "gs://b/d.jpg"]
    labels = ["cat", "dog", "cat", "cat", "cat"]
    hashes = np.frombuffer(b"".join(bytes([c]) * 32 for c in b"11234"), np.uint8).reshape(5, 32)
    phashes = pack_hashes([base[0], base[0], base[1], base[1] ^ 0b111, base[3]])
    found = find_duplicates(uris, labels, hashes, phashes, max_distance=3)
    assert [(d.index, d.kept, d.kind, d.label_conflict) for d in found] == [
        (1, 0, "exact", True),
        (2, 3, "near", False),
    ]
    assert [d.index for d in find_duplicates(uris, labels, hashes, phashes, 2)] == [1]
    assert [d.index for d in find_duplicates(uris, labels, hashes, phashes, -1)] == [1]


def test_fingerprints_survive_the_runner_compressed_and_merge() -> None:
    """The dedupe accumulator pickles to compressed columns, merges in place, and plans the
    same duplicates as the pure core (two packs; the same bytes listed twice; a near copy)."""
    import pickle

    from components.ingest.dedupe import PlanDeduplicationFn

    near = (1 << 255) | 12345
    first = [("p1", 0, "b.jpg", "cat", "aa" * 32, near), ("p1", 1, "a.jpg", "cat", "aa" * 32, near)]
    second = [("p2", 0, "c.jpg", "dog", "bb" * 32, near ^ 0b11)]
    combine = PlanDeduplicationFn(max_distance=2, split_ratios=(0.7, 0.1, 0.2), split_seed=0)
    partial = []
    for fingerprints in (first, second):
        accumulator = combine.create_accumulator()
        for fingerprint in fingerprints:
            combine.add_input(accumulator, fingerprint)
        moved = pickle.loads(pickle.dumps(accumulator))
        assert len(pickle.dumps(moved)) == len(pickle.dumps(accumulator))  # still compressed
        partial.append(moved)
    plan = combine.extract_output(combine.merge_accumulators(partial))
    assert plan.packs == ["p1", "p2"]
    assert plan.dropped == {"p1": frozenset({0}), "p2": frozenset({0})}
    assert plan.duplicates == [
        ("b.jpg", "cat", "a.jpg", "cat", "exact", False),
        ("c.jpg", "dog", "a.jpg", "cat", "near", True),
    ]


def test_out_inside_the_source_is_refused(tmp_path: Path) -> None:
    """A dataset written into the gallery would become a label of the next ingest."""
    gallery = write_pattern_gallery(tmp_path / "g", 2, ("a", "b"))
    with pytest.raises(ValueError, match="inside the source"):
        run(str(gallery), str(gallery / "dataset"), IngestConfig(image_size=32), IN_MEMORY)
    assert not (gallery / "dataset").exists()


def test_edited_label_order_is_caught_by_the_dataset_hash(tmp_path: Path) -> None:
    """Reordering manifest.json's labels would silently swap classes: the hash check refuses."""
    gallery = write_pattern_gallery(tmp_path / "g", 4, ("a", "b"))
    out = tmp_path / "d"
    run(str(gallery), str(out), IngestConfig(image_size=32), IN_MEMORY)
    assert dataset.read_manifest(str(out)).labels == ["a", "b"]
    path = out / dataset.MANIFEST_NAME
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "labels": ["b", "a"]}))
    with pytest.raises(dataset.DatasetError, match="does not match its dataset_hash"):
        dataset.read_manifest(str(out))


def test_overlong_label_is_refused_at_ingest(tmp_path: Path) -> None:
    """A 250-character label fails at ingest, not after training in evaluate's metric keys."""
    gallery = write_pattern_gallery(tmp_path / "g", 2, ("a",))
    long_label = gallery / ("x" * 250)  # a file system allows 255 bytes per name
    long_label.mkdir()
    for index in range(2):
        (long_label / f"{index}.jpg").write_bytes(jpeg_bytes(pattern_image(1, 500 + index)))
    with pytest.raises(ValueError, match=r"250 characters long \(at most 100\)"):
        run(str(gallery), str(tmp_path / "d"), IngestConfig(image_size=32), IN_MEMORY)
    assert not (tmp_path / "d").exists()
