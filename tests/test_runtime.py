"""The OpenVINO tag runtime against Keras: the shipped network (EfficientNet-Lite0 + head,
trained here) on real photos, the tagging pipeline row by row, the runtime choice, and the IR
logged with a model version in a real MLflow server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.gallery import make_gallery
from components.common.images import load_for_model
from components.common.tracking import TaggerSpec
from tests.conftest import jpeg_bytes, pattern_image

IN_MEMORY = ["--direct_running_mode=in_memory"]
LABELS = ["horizontal", "vertical", "square"]


def trained_tiny(path: Path) -> TaggerSpec:
    """A small CNN with the project's head, trained on the three pattern classes."""
    import keras

    from models.head import build_classifier

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny")
    model = build_classifier(backbone, len(LABELS))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    images = np.stack([pattern_image(k, seed=s, size=32) for k in range(3) for s in range(40)])
    labels = np.repeat(np.arange(3), 40)
    model.fit(images.astype(np.float32), labels, epochs=8, batch_size=16, verbose=0)
    model.save(path)
    return TaggerSpec(str(path), LABELS, 32, "pad", False, "models:/tiny/1", None, "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TaggerSpec:
    """The trained tiny tagger, once for the module."""
    return trained_tiny(tmp_path_factory.mktemp("tiny") / "tiny.keras")


@pytest.fixture(scope="module")
def job_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One job's export folder shared by the module's tests (an export takes seconds)."""
    return str(tmp_path_factory.mktemp("job-cache"))


def test_lite0_tagger_on_real_photos_matches_keras(tmp_path: Path) -> None:
    """The shipped architecture (Lite0 at 224 px, ImageNet weights, head trained on photos):
    the f32 IR agrees with Keras on every top-1 and to 1e-4 in every probability, through
    the worker's handler (threads capped, batch split over streams)."""
    import keras

    from components.tag.handler import OpenVINOImageHandler
    from models import openvino_ir
    from models.head import build_classifier
    from models.registry import build_backbone

    files = sorted(make_gallery(tmp_path / "photos", 24).glob("*.jpg"))
    pixels = np.stack([load_for_model(f.read_bytes(), 224) for f in files])
    truth = np.arange(len(files)) % 2  # the gallery alternates china / flower photos
    keras.utils.set_random_seed(0)
    backbone = build_backbone("efficientnet_lite0", 224)
    backbone.trainable = False
    model = build_classifier(backbone, 2)
    # A gentle fit: the head learns the photos but stays unsaturated, so the probabilities
    # compared below are not all 0 or 1.
    model.compile(keras.optimizers.Adam(3e-4), "sparse_categorical_crossentropy")
    model.fit(pixels[:16].astype(np.float32), truth[:16], epochs=2, batch_size=8, verbose=0)
    ir_file = openvino_ir.export_openvino(model, tmp_path / "ir", {"keras_sha256": "x"})
    handler = OpenVINOImageHandler(str(ir_file), threads=1)
    results = list(handler.run_inference(list(pixels), handler.load_model()))
    got = np.stack([result.inference for result in results])
    expected = np.asarray(model.predict_on_batch(pixels.astype(np.float32)))
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    assert np.max(np.abs(got - expected)) <= 1e-4
    print("Lite0 IR vs Keras: max |dp|", np.max(np.abs(got - expected)), "top-1 prob",
          expected.max(1).min(), "..", expected.max(1).max())  # fmt: skip
    assert expected.max(1).min() < 0.95  # not saturated: a real test of the probabilities
    assert (expected.argmax(1) == truth).mean() >= 0.75  # and trained: it tells them apart
    assert json.loads((tmp_path / "ir" / openvino_ir.SPEC_NAME).read_text())["runtime"] == (
        "openvino"
    )


def write_inbox(folder: Path) -> Path:
    """Real JPEGs of the three patterns, plus one broken file."""
    folder.mkdir(parents=True)
    for kind in range(3):
        for index in range(12):
            pixels = pattern_image(kind, seed=5000 + 100 * kind + index, size=48)
            (folder / f"{kind}_{index}.jpg").write_bytes(jpeg_bytes(pixels))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def rows_by_uri(out: Path) -> dict[str, dict]:
    """Tag rows of a finished run, by URI."""
    rows = {}
    for shard in out.glob("tags-*.jsonl"):
        for line in shard.read_text().splitlines():
            row = json.loads(line)
            rows[row["uri"]] = row
    return rows


def test_pipeline_rows_match_between_runtimes(
    tiny: TaggerSpec, job_cache: str, tmp_path: Path
) -> None:
    """The same run with Keras and with OpenVINO (auto on this CPU, IR exported on the fly):
    every image gets the same top-1 and status, scores within 1e-4, the same reject."""
    from components.tag.pipeline import run
    from components.tag.policy import TagPolicy
    from components.tag.runtime import choose_runtime

    inbox = write_inbox(tmp_path / "inbox")
    policy = TagPolicy(min_score=0.6, min_margin=0.2)
    keras_run = run(str(inbox), str(tmp_path / "k"), tiny, policy, beam_args=IN_MEMORY)
    auto = choose_runtime(tiny, "auto", "f32", job_cache)
    assert auto.name == "openvino" and "exported on the fly" in auto.reason
    auto_run = run(str(inbox), str(tmp_path / "o"), tiny, policy, beam_args=IN_MEMORY,
                   runtime=auto)  # fmt: skip
    assert (keras_run.runtime, auto_run.runtime) == ("keras", "openvino")
    assert json.loads((tmp_path / "o" / "_SUCCESS.json").read_text())["runtime"] == "openvino"
    by_keras, by_openvino = rows_by_uri(tmp_path / "k"), rows_by_uri(tmp_path / "o")
    assert set(by_keras) == set(by_openvino) and len(by_keras) == 36
    for uri, row in by_keras.items():
        other = by_openvino[uri]
        assert (row["top1"], row["status"]) == (other["top1"], other["status"]), uri
        assert abs(row["score"] - other["score"]) <= 1e-4, uri
    assert (keras_run.rejected, auto_run.rejected) == (1, 1)
    correct = sum(row["top1"] == LABELS[int(Path(uri).name[0])] for uri, row in by_keras.items())
    assert correct >= 30  # a trained tagger, not a constant


def test_runtime_choice_rules(tiny: TaggerSpec, job_cache: str, tmp_path: Path) -> None:
    """keras is Keras; bf16 needs OpenVINO; an export is reused within the job; a logged IR
    made from another .keras file is not trusted; no IR and nowhere to export: Keras."""
    import shutil

    from components.tag.runtime import RuntimeUnavailable, choose_runtime
    from models import openvino_ir

    assert choose_runtime(tiny, "keras").model_file == tiny.model_file
    with pytest.raises(ValueError, match="--runtime openvino"):
        choose_runtime(tiny, "keras", "bf16")
    with pytest.raises(ValueError, match="not one of"):
        choose_runtime(tiny, "onnx")
    assert choose_runtime(tiny, "auto", "f32", "").name == "keras"
    with pytest.raises(RuntimeUnavailable, match="no OpenVINO IR"):
        choose_runtime(tiny, "openvino", "f32", "")
    first = choose_runtime(tiny, "openvino", "f32", job_cache)
    assert first.model_file.endswith("model.xml")
    again = choose_runtime(tiny, "auto", "bf16", job_cache)
    assert "exported earlier" in again.reason and again.label == "openvino-bf16"
    # OpenVINO keeps f32 without a word on a CPU with no bf16: the choice says so.
    ran = openvino_ir.CompiledTagger(again.model_file, precision="bf16").inference_precision
    assert ("no bf16 support" in again.reason) == (ran != "bf16"), (ran, again.reason)
    logged = tmp_path / "logged"
    shutil.copytree(Path(first.model_file).parent, logged)
    (logged / "gallerytag.json").write_text(json.dumps({"keras_sha256": "another model"}))
    stale = TaggerSpec(**{**tiny.__dict__, "openvino_model": str(logged / "model.xml")})
    chosen = choose_runtime(stale, "openvino", "f32", job_cache)
    assert chosen.model_file == first.model_file  # the job's own export, not the stale IR


def test_workers_do_not_pin_their_threads(tiny: TaggerSpec, job_cache: str) -> None:
    """Each worker's plugin runs unpinned: pinned, Beam's one-per-core workers all chose
    the same core and ran at half speed (docs/benchmarks.md)."""
    from components.tag.runtime import choose_runtime
    from models import openvino_ir

    chosen = choose_runtime(tiny, "openvino", "f32", job_cache)
    compiled = openvino_ir.CompiledTagger(chosen.model_file, threads=1).compiled
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1


def test_bf16_run_says_so(tiny: TaggerSpec, job_cache: str, tmp_path: Path) -> None:
    """Reduced precision only when asked for, and the output records it."""
    from components.tag.pipeline import run
    from components.tag.policy import TagPolicy
    from components.tag.runtime import choose_runtime

    inbox = write_inbox(tmp_path / "inbox")
    bf16 = choose_runtime(tiny, "openvino", "bf16", job_cache)
    summary = run(str(inbox), str(tmp_path / "b"), tiny, TagPolicy(min_score=0.6),
                  beam_args=IN_MEMORY, runtime=bf16)  # fmt: skip
    assert summary.runtime == "openvino-bf16" and summary.seen == 37
    assert json.loads((tmp_path / "b" / "_SUCCESS.json").read_text())["runtime"] == "openvino-bf16"


def test_evaluate_scores_bf16_through_the_tag_path(tiny: TaggerSpec, job_cache: str) -> None:
    """evaluate's bf16 scorer takes the IR the tag runtime takes (this job's export) and
    gives the tag worker's bf16 scores exactly; without an IR to run it names the fix."""
    from components.evaluate.scoring import reduced_scorer
    from components.tag.handler import OpenVINOImageHandler
    from components.tag.runtime import RuntimeUnavailable, choose_runtime

    tag_choice = choose_runtime(tiny, "openvino", "bf16", job_cache)
    scorer = reduced_scorer(tiny, "bf16", job_cache)
    assert scorer is not None and "exported earlier in this job" in scorer.origin
    handler = OpenVINOImageHandler(tag_choice.model_file, precision="bf16")
    images = np.stack([pattern_image(k % 3, seed=300 + k, size=32) for k in range(12)])
    batch = images.astype(np.float32)
    assert np.array_equal(scorer.predict(batch), handler.predict(handler.load_model(), batch))
    assert scorer.ran_as == handler.load_model().inference_precision
    assert reduced_scorer(tiny, "f32", job_cache) is None  # f32 is Keras's own scoring
    with pytest.raises(RuntimeUnavailable, match="evaluate with --precision f32"):
        reduced_scorer(tiny, "bf16", "")  # no IR logged, nowhere to export one


def test_registered_version_carries_its_ir(tiny: TaggerSpec, tracking_env: str, tmp_path) -> None:
    """At registration the IR is logged into the model version; fetch_tagger finds it and
    the tag step uses it instead of exporting again."""
    import keras
    import mlflow
    import mlflow.keras
    from mlflow.models import infer_signature

    from components.common.tracking import fetch_tagger, log_openvino_ir, model_metadata
    from components.tag.runtime import choose_runtime

    model = keras.saving.load_model(tiny.model_file)
    probe = np.stack([pattern_image(k, seed=77, size=32) for k in range(3)]).astype(np.float32)
    with mlflow.start_run():
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=infer_signature(probe, model.predict_on_batch(probe)),
            pip_requirements=["keras"],
            metadata=model_metadata(LABELS, 32, "pad", False, "tiny"),
        )
        difference = log_openvino_ir(info.model_uri, info.model_id, probe)
    assert difference is not None and difference <= 1e-4
    version = mlflow.register_model(info.model_uri, "runtime-ir-test").version
    tagger = fetch_tagger(f"models:/runtime-ir-test/{version}", str(tmp_path / "dl"))
    assert tagger.openvino_model and Path(tagger.openvino_model).with_suffix(".bin").exists()
    spec = json.loads((Path(tagger.openvino_model).parent / "gallerytag.json").read_text())
    assert spec["labels"] == LABELS and spec["image_size"] == 32
    chosen = choose_runtime(tagger, "auto", "f32", str(tmp_path / "cache"))
    assert chosen.name == "openvino" and "logged with the model version" in chosen.reason
    assert not (tmp_path / "cache").exists()  # nothing exported


def test_tag_command_prints_its_runtime(tmp_path: Path, monkeypatch, capsys) -> None:
    """`gallerytag tag` defaults to OpenVINO on this CPU and says so; bf16 with Keras is one
    line on stderr before any work."""
    from click.testing import CliRunner

    from gallerytag.cli import cli
    from tests.conftest import save_mlflow_tagger
    from tests.test_cli_errors import assert_one_line, run_main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    inbox = write_inbox(tmp_path / "inbox")
    model = save_mlflow_tagger(tmp_path / "model", LABELS)
    common = ["tag", str(inbox), "--model", str(model), "--min-score", "0.5"]
    result = CliRunner().invoke(cli, [*common, "--out", str(tmp_path / "o"),
                                      "--direct_running_mode=in_memory"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tag: runtime: openvino (f32): fastest exact runtime on CPU" in result.output
    assert "seen 37" in result.output
    code, stderr = run_main([*common, "--out", str(tmp_path / "b"), "--runtime", "keras",
                             "--precision", "bf16"], monkeypatch, capsys)  # fmt: skip
    assert_one_line(code, stderr, "--precision bf16 runs on OpenVINO only")
    assert not (tmp_path / "b").exists()
