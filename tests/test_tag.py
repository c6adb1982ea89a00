"""Tagging: the auto/review policy, the row schema and the Beam job on local and gs:// data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.common import gcs, storage, tag_rows
from components.common.tracking import TaggerSpec
from components.tag.pipeline import TagOutputs, failed_batch_rows, run
from components.tag.policy import TagPolicy, rejected_row, tag_row
from tests.conftest import jpeg_bytes, write_broken_files
from tests.tag_schemas import validate_row

LABELS = ["dark", "bright"]
IN_MEMORY = ["--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def brightness_tagger(tmp_path_factory: pytest.TempPathFactory) -> TaggerSpec:
    """A real (tiny) Keras 3 model that calls an image bright or dark by its mean pixel."""
    return make_brightness_tagger(tmp_path_factory.mktemp("model"))


def make_brightness_tagger(folder: Path) -> TaggerSpec:
    """Save the brightness model into `folder` and describe it as a tagger."""
    import keras

    inputs = keras.Input((32, 32, 3))
    mean = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    # brightness in [0, 1]; logits cross at 0.5, so mid-grey is a coin toss (-> review).
    brightness = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(1 / 3))(mean)
    logits = keras.layers.Dense(
        2,
        kernel_initializer=keras.initializers.Constant([[-30.0, 30.0]]),
        bias_initializer=keras.initializers.Constant([15.0, -15.0]),
    )(brightness)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    path = folder / "brightness.keras"
    model.save(path)
    return TaggerSpec(str(path), LABELS, 32, "pad", False, "models:/brightness/1", None, "1")


def _gray(level: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-5, 6, size=(40, 40, 3))  # square: padding would darken it
    return jpeg_bytes(np.clip(level + noise, 0, 255).astype(np.uint8))


def _rows(folder: Path | str, pattern: str) -> list[dict]:
    rows = []
    for uri in storage.list_files(str(folder), recursive=False):
        if Path(uri).match(pattern):
            rows += [json.loads(line) for line in storage.read_text(uri).splitlines() if line]
    return rows


def test_policy_auto_and_review() -> None:
    """Confident and clear predictions are auto; low score or low margin goes to review."""
    policy = TagPolicy(min_score=0.5, min_margin=0.2)
    labels = ["a", "b", "c"]
    confident = tag_row(
        "/in/u.jpg", "0" * 64, np.array([0.8, 0.15, 0.05]), labels, policy, "m", "1"
    )
    assert confident["status"] == "auto" and confident["top1"] == "a"
    assert confident["margin"] == pytest.approx(0.65)
    unsure = tag_row("/in/u.jpg", "0" * 64, np.array([0.45, 0.35, 0.2]), labels, policy, "m", "1")
    assert unsure["status"] == "review" and "top-1 score" in unsure["reason"]
    close = tag_row("/in/u.jpg", "0" * 64, np.array([0.55, 0.4, 0.05]), labels, policy, "m", "1")
    assert close["status"] == "review" and close["reason"].startswith("margin")
    for row in (confident, unsure, close, rejected_row("/in/u.jpg", "truncated", "x", "m", None)):
        validate_row(row)


def test_policy_from_an_evaluation_per_label_bars() -> None:
    """derive_policy picks the lowest bar reaching the target per well-supported label (else
    the global one, else never); the tag step applies exactly those bars."""
    from components.evaluate.tag_policy import derive_policy
    from components.tag.policy import policy_from_file

    rng = np.random.default_rng(0)
    n = 400
    truth = rng.integers(0, 3, n)
    confidence = rng.uniform(0.34, 1.0, n)
    # Right when confident: a prediction is right with probability = its confidence, and
    # label 'c' is always wrong (so no bar reaches the target for it).
    predicted = np.where(rng.uniform(0, 1, n) < confidence, truth, (truth + 1) % 3)
    truth[predicted == 2] = 0
    probabilities = np.full((n, 3), 0.0)
    probabilities[np.arange(n), predicted] = confidence
    for row in range(n):
        others = [i for i in range(3) if i != predicted[row]]
        probabilities[row, others] = (1 - confidence[row]) / 2
    policy = derive_policy(probabilities, truth, ["a", "b", "c"], 0.9, min_label_support=30)
    bars = {label: row["min_score"] for label, row in policy["labels"].items()}
    assert policy["labels"]["a"]["from"] == "label" and 0.5 <= bars["a"] <= 0.99
    assert bars["c"] > 1.0  # never auto
    auto = probabilities.max(1) >= np.array([bars["abc"[p]] for p in predicted])
    assert policy["expected"]["coverage"] == pytest.approx(auto.mean())
    assert policy["expected"]["precision"]["value"] == pytest.approx(
        (predicted[auto] == truth[auto]).mean()
    )
    assert policy["expected"]["precision"]["value"] >= 0.9
    tag_policy = policy_from_file(policy)
    assert tag_policy.label_min_scores == bars and tag_policy.min_margin == 0.0
    above = np.array([0.0, 0.0, 0.0])
    above[0] = bars["a"]
    above[1:] = (1 - bars["a"]) / 2
    assert (
        tag_row("/in/u.jpg", "0" * 64, above, ["a", "b", "c"], tag_policy, "m", "1")["status"]
        == "auto"
    )
    never = np.array([0.005, 0.005, 0.99])
    row = tag_row("/in/u.jpg", "0" * 64, never, ["a", "b", "c"], tag_policy, "m", "1")
    assert row["status"] == "review" and "'c'" in row["reason"]
    with pytest.raises(ValueError, match="schema_version"):
        policy_from_file({"schema_version": 99})


def test_unevaluated_model_sends_everything_to_review() -> None:
    """No evaluation, no trust: even a 0.99 prediction goes to review, saying how to fix it."""
    from components.tag.policy import unevaluated_policy

    policy = unevaluated_policy()
    row = tag_row("/in/u.jpg", "0" * 64, np.array([0.99, 0.01]), LABELS, policy, "m", "1")
    assert row["status"] == "review" and "gallerytag evaluate" in row["reason"]
    assert policy.as_record()["review_all"]
    validate_row(row)


def test_policy_rejects_nonsense_thresholds() -> None:
    """Thresholds are probabilities."""
    with pytest.raises(ValueError):
        TagPolicy(min_score=1.5)


def test_failed_inference_batches_become_rejections() -> None:
    """A batch from RunInference's dead-letter output yields one rejected row per image."""
    batch = [(("gs://b/1.jpg", "h1"), None), (("gs://b/2.jpg", "h2"), None)]
    spec = TaggerSpec("m.keras", LABELS, 32, "pad", False, "models:/x/1", None, "1")
    rows = list(failed_batch_rows((batch, ValueError("boom")), spec))
    assert [r["uri"] for r in rows] == ["gs://b/1.jpg", "gs://b/2.jpg"]
    assert all(r["reason"] == "inference_failed" for r in rows)


def test_tag_folder_end_to_end(brightness_tagger: TaggerSpec, tmp_path: Path) -> None:
    """Every file ends up in exactly one of tags (auto/review) or rejected; rows are valid."""
    source = tmp_path / "inbox"
    (source / "deeper" / "still").mkdir(parents=True)
    expected = {}
    for index in range(10):
        level = 20 if index % 2 else 235
        folder = source if index < 5 else source / "deeper" / "still"
        (folder / f"photo {index}.jpg").write_bytes(_gray(level, index))
        expected[f"photo {index}.jpg"] = "dark" if level == 20 else "bright"
    (source / "middle.jpg").write_bytes(_gray(128, 99))  # undecided: review
    broken = write_broken_files(source / "deeper")
    out = tmp_path / "tags"

    summary = run(
        str(source), str(out), brightness_tagger, outputs=TagOutputs(shards=2), beam_args=IN_MEMORY
    )

    assert summary.seen == 14
    assert (summary.auto, summary.review, summary.rejected) == (10, 1, 3)
    rows = _rows(out, "tags-*.jsonl")
    assert len(rows) == 11
    for row in rows:
        validate_row(row)
    by_name = {Path(row["uri"]).name: row for row in rows}
    for name, label in expected.items():
        assert by_name[name]["top1"] == label and by_name[name]["status"] == "auto"
    assert by_name["middle.jpg"]["status"] == "review"
    review = _rows(out, "review.jsonl")
    assert [Path(r["uri"]).name for r in review] == ["middle.jpg"]
    rejected = _rows(out, "rejected.jsonl")
    assert {Path(r["uri"]).name: r["reason"] for r in rejected} == broken
    for row in rejected:
        validate_row(row)
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["seen"] == 14 and success["model_version"] == "1"
    assert not list(out.glob(".staging-*"))


def test_rerun_replaces_previous_output(brightness_tagger: TaggerSpec, tmp_path: Path) -> None:
    """A second run into the same folder leaves one row per image, not two."""
    source = tmp_path / "inbox"
    source.mkdir()
    for index in range(4):
        (source / f"{index}.jpg").write_bytes(_gray(30, index))
    out = tmp_path / "tags"
    run(str(source), str(out), brightness_tagger, outputs=TagOutputs(shards=3), beam_args=IN_MEMORY)
    run(str(source), str(out), brightness_tagger, outputs=TagOutputs(shards=2), beam_args=IN_MEMORY)
    rows = _rows(out, "tags-*.jsonl")
    assert sorted(Path(r["uri"]).name for r in rows) == [f"{i}.jpg" for i in range(4)]
    assert len(list(out.glob("tags-*.jsonl"))) == 1  # 4 rows fill one file, not 2


def test_tag_gs_source_and_output(
    brightness_tagger: TaggerSpec, gcs_bucket: str, beam_gcs_anonymous: str
) -> None:
    """Read images from gs:// and write the tags to gs:// (real GCS API, emulator)."""
    prefix = f"gs://{gcs_bucket}/gallery"
    for index in range(4):
        storage.write_bytes(f"{prefix}/img{index}.jpg", _gray(230 if index % 2 else 25, index))
    storage.write_bytes(f"{prefix}/sub/notes.jpg", b"not an image")
    out = f"gs://{gcs_bucket}/tags"
    summary = run(prefix, out, brightness_tagger, outputs=TagOutputs(shards=1), beam_args=IN_MEMORY)
    assert (summary.seen, summary.auto + summary.review, summary.rejected) == (5, 4, 1)
    names = [uri.rsplit("/", 1)[-1] for uri in storage.list_files(out)]
    assert "_SUCCESS.json" in names and "tags-00000-of-00001.jsonl" in names
    rows = _rows(out, "tags-*.jsonl")
    assert sorted(r["uri"] for r in rows) == [f"{prefix}/img{i}.jpg" for i in range(4)]


def test_missing_source_is_a_clear_error(brightness_tagger: TaggerSpec, tmp_path: Path) -> None:
    """A typo in the source fails at once with the path in the message."""
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(str(tmp_path / "nowhere"), str(tmp_path / "out"), brightness_tagger)


def test_incremental_run_carries_unchanged_images(brightness_tagger, tmp_path: Path) -> None:
    """Same model version: unchanged images keep their rows, changed and new ones are tagged."""
    source = tmp_path / "inbox"
    source.mkdir()
    for index in range(4):
        (source / f"{index}.jpg").write_bytes(_gray(30, index))
    out = tmp_path / "tags"
    first = run(str(source), str(out), brightness_tagger, beam_args=IN_MEMORY)
    assert first.carried == 0
    (source / "0.jpg").write_bytes(_gray(230, 100))  # changed content: dark -> bright
    (source / "new.jpg").write_bytes(_gray(240, 101))
    (source / "3.jpg").unlink()  # gone: its old row must not survive
    outputs = TagOutputs(incremental=True)
    second = run(str(source), str(out), brightness_tagger, outputs=outputs, beam_args=IN_MEMORY)
    assert (second.seen, second.carried) == (4, 2)
    rows = {Path(r["uri"]).name: r for r in _rows(out, "tags-*.jsonl")}
    assert sorted(rows) == ["0.jpg", "1.jpg", "2.jpg", "new.jpg"]
    assert rows["0.jpg"]["top1"] == "bright" and rows["new.jpg"]["top1"] == "bright"


def test_parquet_output_reads_with_pyarrow(brightness_tagger, tmp_path: Path) -> None:
    """--format parquet writes the same rows, readable by pyarrow, and feeds incremental."""
    import pyarrow.parquet as pq

    source = tmp_path / "inbox"
    source.mkdir()
    for index in range(5):
        (source / f"{index}.jpg").write_bytes(_gray(20 if index % 2 else 235, index))
    out = tmp_path / "tags"
    outputs = TagOutputs(format="parquet", shards=2)
    run(str(source), str(out), brightness_tagger, outputs=outputs, beam_args=IN_MEMORY)
    table = pq.read_table(out / "tags")  # the folder is the dataset
    assert table.num_rows == 5
    for row in table.to_pylist():
        validate_row(tag_rows.from_parquet_row(row))
    again = TagOutputs(format="parquet", shards=2, incremental=True)
    summary = run(str(source), str(out), brightness_tagger, outputs=again, beam_args=IN_MEMORY)
    assert summary.carried == 5


def test_copy_to_label_folders(brightness_tagger, tmp_path: Path) -> None:
    """--copy-to sorts images into one folder per label (uncertain ones under _review)."""
    source = tmp_path / "inbox"
    source.mkdir()
    (source / "a.jpg").write_bytes(_gray(20, 1))
    (source / "b.jpg").write_bytes(_gray(235, 2))
    (source / "c.jpg").write_bytes(_gray(128, 3))
    sorted_dir = tmp_path / "sorted"
    outputs = TagOutputs(copy_to=str(sorted_dir))
    run(
        str(source), str(tmp_path / "tags"), brightness_tagger, outputs=outputs, beam_args=IN_MEMORY
    )
    copies = {p.relative_to(sorted_dir).parent.as_posix(): p.name for p in sorted_dir.rglob("*")
              if p.is_file()}  # fmt: skip
    assert sorted(copies) == ["_review/bright", "bright", "dark"] or sorted(copies) == [
        "_review/dark",
        "bright",
        "dark",
    ]  # the coin-toss grey lands in _review under whichever label won by a hair
    assert copies["dark"].endswith("_a.jpg") and copies["bright"].endswith("_b.jpg")


def test_write_metadata_merges_into_gcs_objects(
    brightness_tagger: TaggerSpec, gcs_bucket: str, beam_gcs_anonymous: str
) -> None:
    """Tags land in the object's custom metadata; a foreign key already there survives."""
    prefix = f"gs://{gcs_bucket}/photos"
    storage.write_bytes(f"{prefix}/winter.jpg", _gray(235, 7))
    gcs.merge_metadata(f"{prefix}/winter.jpg", {"owner": "hotel-42"})
    outputs = TagOutputs(write_metadata=True, shards=1)
    out = f"gs://{gcs_bucket}/tags"
    run(prefix, out, brightness_tagger, outputs=outputs, beam_args=IN_MEMORY)
    run(prefix, out, brightness_tagger, outputs=outputs, beam_args=IN_MEMORY)  # idempotent
    metadata = gcs.get_metadata(f"{prefix}/winter.jpg")
    assert metadata["owner"] == "hotel-42"
    assert metadata["gallerytag-label"] == "bright"
    assert metadata["gallerytag-model-version"] == "1"


def test_write_metadata_needs_gcs(brightness_tagger: TaggerSpec, tmp_path: Path) -> None:
    """Asking for object metadata on a local folder is a clear error, not a crash mid-run."""
    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match="gs://"):
        run(
            str(tmp_path / "in"),
            str(tmp_path / "o"),
            brightness_tagger,
            outputs=TagOutputs(write_metadata=True),
        )


def test_remote_runner_gets_the_model_from_temp_location(
    brightness_tagger: TaggerSpec, gcs_bucket: str
) -> None:
    """For Dataflow-like runners the model file is staged next to --temp_location."""
    from components.tag.workers import stage_model_for_workers

    direct = stage_model_for_workers(brightness_tagger, [])
    assert direct.model_file == brightness_tagger.model_file
    args = ["--runner", "DataflowRunner", "--temp_location", f"gs://{gcs_bucket}/tmp"]
    staged = stage_model_for_workers(brightness_tagger, args)
    assert staged.model_file.startswith(f"gs://{gcs_bucket}/tmp/gallerytag-models/")
    assert storage.read_bytes(staged.model_file) == Path(brightness_tagger.model_file).read_bytes()
    with pytest.raises(ValueError, match="temp_location"):
        stage_model_for_workers(brightness_tagger, ["--runner", "DataflowRunner"])


def test_malformed_corpus_is_fully_accounted_for(brightness_tagger, tmp_path: Path) -> None:
    """The ingest issue's malformed corpus: no crash, every odd but valid image tagged, every
    broken one rejected with its specific reason, seen = auto + review + rejected."""
    from tests.corpus import write_malformed_corpus

    expected = write_malformed_corpus(tmp_path / "inbox")
    out = tmp_path / "tags"
    summary = run(str(tmp_path / "inbox"), str(out), brightness_tagger, beam_args=IN_MEMORY)
    bad = {name: reason for name, reason in expected.items() if reason}
    assert summary.seen == len(expected)
    assert summary.seen == summary.auto + summary.review + summary.rejected
    rejected = {Path(row["uri"]).name: row["reason"] for row in _rows(out, "rejected.jsonl")}
    assert rejected == bad
    tagged = {Path(row["uri"]).name for row in _rows(out, "tags-*.jsonl")}
    assert tagged == set(expected) - set(bad)


def test_inference_threads_split_the_cores_between_local_workers() -> None:
    """Multi-processing DirectRunner: cores / workers TF threads each; otherwise TF decides."""
    import os

    from components.tag.workers import inference_threads

    cores = os.cpu_count() or 1
    assert inference_threads([]) == 1  # one worker per core
    assert inference_threads(["--direct_num_workers=1"]) == cores
    assert inference_threads(["--direct_running_mode=in_memory"]) is None
    assert inference_threads(["--runner=DataflowRunner", "--project=p"]) is None


def test_multi_label_rows_use_per_label_thresholds() -> None:
    """Sigmoid models: every label over its own cut-off is a tag; a score near any cut-off
    sends the image to review, naming the label."""
    from components.tag.policy import tag_row

    labels = ["winter", "pool", "logo"]
    policy = TagPolicy(min_score=0.5, min_margin=0.1, label_thresholds={"winter": 0.7})
    sure = tag_row(
        "/in/u1.jpg", "a" * 64, np.array([0.9, 0.1, 0.65]), labels, policy, "m", "1", True
    )
    assert [t["label"] for t in sure["labels"]] == ["winter", "logo"]
    assert sure["status"] == "auto" and sure["margin"] == pytest.approx(0.15)
    validate_row(sure)
    unsure = tag_row(
        "/in/u2.jpg", "b" * 64, np.array([0.75, 0.2, 0.3]), labels, policy, "m", "1", True
    )
    assert [t["label"] for t in unsure["labels"]] == ["winter"]
    assert unsure["status"] == "review" and "'winter'" in unsure["reason"]
    validate_row(unsure)
    none = tag_row(
        "/in/u3.jpg", "c" * 64, np.array([0.1, 0.05, 0.2]), labels, policy, "m", "1", True
    )
    assert none["labels"] == [] and none["status"] == "auto"
    validate_row(none)
    with pytest.raises(ValueError, match="label thresholds"):
        TagPolicy(label_thresholds={"pool": 1.5})


def test_multi_label_tagger_through_the_pipeline(brightness_tagger, tmp_path: Path) -> None:
    """A tagger marked multi-label gets per-label rows from the real Beam job."""
    import dataclasses

    source = tmp_path / "inbox"
    source.mkdir()
    (source / "bright.jpg").write_bytes(_gray(235, 1))
    (source / "dark.jpg").write_bytes(_gray(20, 2))
    tagger = dataclasses.replace(brightness_tagger, multi_label=True)
    policy = TagPolicy(min_score=0.5, min_margin=0.1, label_thresholds={"bright": 0.9})
    summary = run(str(source), str(tmp_path / "tags"), tagger, policy, beam_args=IN_MEMORY)
    assert summary.seen == 2 and summary.rejected == 0
    rows = {Path(r["uri"]).name: r for r in _rows(tmp_path / "tags", "tags-*.jsonl")}
    for row in rows.values():
        validate_row(row)
    assert [t["label"] for t in rows["bright.jpg"]["labels"]] == ["bright"]
    assert [t["label"] for t in rows["dark.jpg"]["labels"]] == ["dark"]


def test_bad_label_threshold_is_named(tmp_path: Path) -> None:
    """--label-threshold without LABEL=P is refused before any work starts."""
    from click.testing import CliRunner

    from gallerytag.cli import cli

    args = ["tag", str(tmp_path), "--model", "m", "--out", str(tmp_path / "o"),
            "--label-threshold", "winter"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "'winter' is not LABEL=P" in result.output


def test_model_labels_that_escape_folders_are_refused(tmp_path: Path) -> None:
    """A label like ../../x in a model's metadata is refused when the model is loaded."""
    from components.common.tracking import fetch_tagger
    from tests.conftest import save_mlflow_tagger

    model = save_mlflow_tagger(tmp_path / "model", ["../../../x", "fine"])
    with pytest.raises(ValueError, match=r"unusable label.*'\.\./\.\./\.\./x'.*path separator"):
        fetch_tagger(str(model), str(tmp_path / "dl"))


def test_copy_to_never_writes_outside_its_root(tmp_path: Path) -> None:
    """Whatever a row's label says, --copy-to writes only under its root."""
    from components.tag.writeback import CopyToLabelFolder

    image = tmp_path / "in" / "a.jpg"
    image.parent.mkdir()
    image.write_bytes(_gray(20, 1))
    root = tmp_path / "sorted" / "inner"
    row = {"uri": str(image), "content_hash": "ab" * 32, "status": "auto", "top1": "../../x"}
    with pytest.raises(ValueError, match="outside"):
        list(CopyToLabelFolder(str(root)).process(row))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [image]


def test_incremental_run_applies_a_changed_policy_to_every_row(brightness_tagger, tmp_path):
    """--incremental with a stricter --min-score: no row keeps its old status; the policy
    used is in _SUCCESS.json."""
    source = tmp_path / "inbox"
    source.mkdir()
    for index, level in enumerate((20, 100, 140, 235)):
        (source / f"{index}.jpg").write_bytes(_gray(level, index))
    out = tmp_path / "tags"
    outputs = TagOutputs(incremental=True)
    first = run(str(source), str(out), brightness_tagger, TagPolicy(0.5, 0.1), outputs, IN_MEMORY)
    assert first.auto == 4
    strict = TagPolicy(min_score=0.999, min_margin=0.1)
    summary = run(str(source), str(out), brightness_tagger, strict, outputs, IN_MEMORY)
    assert summary.carried == 0 and summary.review > 0  # the old run had them all auto
    for row in _rows(out, "tags-*.jsonl"):
        expected = "review" if row["score"] < 0.999 or row["margin"] < 0.1 else "auto"
        assert row["status"] == expected, row
    assert json.loads((out / "_SUCCESS.json").read_text())["policy"]["min_score"] == 0.999
    again = run(str(source), str(out), brightness_tagger, strict, outputs, IN_MEMORY)
    assert again.carried == 4  # same policy: unchanged images are carried again


def test_outputs_inside_the_source_are_not_inputs(brightness_tagger, tmp_path: Path) -> None:
    """--out and --copy-to inside SOURCE: the next run does not tag their files."""
    source = tmp_path / "inbox"
    source.mkdir()
    for index in range(3):
        (source / f"{index}.jpg").write_bytes(_gray(30 + 90 * index, index))
    outputs = TagOutputs(copy_to=str(source / "sorted"))
    for _ in range(2):
        summary = run(str(source), str(source / "tags"), brightness_tagger, outputs=outputs,
                      beam_args=IN_MEMORY)  # fmt: skip
        assert (summary.seen, summary.rejected) == (3, 0)
    with pytest.raises(ValueError, match="source folder itself"):
        run(str(source), str(source), brightness_tagger, beam_args=IN_MEMORY)


def test_copy_to_with_incremental_copies_carried_images(brightness_tagger, tmp_path: Path):
    """An incremental run with --copy-to fills the copy folder with every image, carried
    ones included."""
    source = tmp_path / "inbox"
    source.mkdir()
    for index in range(3):
        (source / f"{index}.jpg").write_bytes(_gray(20 + 100 * index, index))
    out = tmp_path / "tags"
    run(str(source), str(out), brightness_tagger, outputs=TagOutputs(incremental=True),
        beam_args=IN_MEMORY)  # fmt: skip
    copies = tmp_path / "sorted"
    outputs = TagOutputs(incremental=True, copy_to=str(copies))
    summary = run(str(source), str(out), brightness_tagger, outputs=outputs, beam_args=IN_MEMORY)
    assert summary.carried == 3
    names = sorted(p.name.split("_", 1)[1] for p in copies.rglob("*.jpg"))
    assert names == ["0.jpg", "1.jpg", "2.jpg"]
