"""Evaluation against real parts: Keras taggers registered in a real MLflow server, a Beam-
ingested dataset, the HTML report parsed back, the gate moving (or not) the registry alias,
and Grad-CAM on a task where the answer's location is known."""

from __future__ import annotations

import json
import re
import uuid
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from components.common import dataset
from components.ingest.core import IngestConfig
from tests.conftest import jpeg_bytes, pattern_image, write_pattern_gallery

LABELS = ("horizontal", "square", "vertical")  # sorted, as ingest orders its label map
IN_MEMORY = ["--direct_running_mode=in_memory"]
SIZE = 32


def tiny_tagger(n_classes: int, size: int = SIZE, seed: int = 0):
    """A small CNN backbone (ending in global average pooling) plus the project's head."""
    import keras

    from models.head import build_classifier

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny")
    model = build_classifier(backbone, n_classes, dropout=0.1)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    return model


def split_arrays(dataset_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of one split."""
    from components.common.tfdata import read_in_order

    manifest = dataset.read_manifest(dataset_dir)
    files = dataset.shard_paths(dataset_dir, manifest, split)
    batches = list(read_in_order(files, manifest.image_size, 256))
    return (
        np.concatenate([b["image"].numpy() for b in batches]),
        np.concatenate([b["label"].numpy() for b in batches]),
    )


def register(model, name: str, labels: list[str]) -> str:
    """Log the Keras model as gallerytag does and register it; returns models:/NAME/VERSION."""
    import mlflow
    import mlflow.keras
    from mlflow.models import infer_signature

    from components.common.tracking import model_metadata

    probe = np.zeros((1, SIZE, SIZE, 3), np.float32)
    with mlflow.start_run():
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=infer_signature(probe, model.predict_on_batch(probe)),
            pip_requirements=["keras==3.15.1"],
            metadata=model_metadata(labels, SIZE, "pad", False, "tiny"),
            registered_model_name=name,
        )
    return f"models:/{name}/{info.registered_model_version}"


@pytest.fixture(scope="module")
def noisy_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three pattern classes plus six horizontal-stripe images filed under 'vertical'."""
    from components.ingest.pipeline import run as ingest

    root = tmp_path_factory.mktemp("eval")
    gallery = write_pattern_gallery(root / "gallery", 50, LABELS)
    for index in range(6):
        pixels = pattern_image(0, seed=90_000 + index)
        (gallery / "vertical" / f"mislabelled_{index}.jpg").write_bytes(jpeg_bytes(pixels))
    out = str(root / "dataset")
    ingest(str(gallery), out, IngestConfig(image_size=SIZE), beam_args=IN_MEMORY)
    return out


@pytest.fixture(scope="module")
def good_model(noisy_dataset: str):
    """The tiny tagger trained for a few epochs: clearly better than chance."""
    model = tiny_tagger(len(LABELS))
    images, labels = split_arrays(noisy_dataset, "train")
    model.fit(images, labels, epochs=12, batch_size=16, verbose=0)
    return model


class Sections(HTMLParser):
    """Collects element ids, image alts and table rows from the report."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.img_alts: list[str] = []
        self.table_rows: dict[str, int] = {}
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        """Record what the assertions look at."""
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "table":
            self._table = attributes.get("id")
            self.table_rows[self._table] = 0
        if tag == "tr" and self._table:
            self.table_rows[self._table] += 1
        if tag == "img":
            assert attributes["src"].startswith("data:image/png;base64,")
            self.img_alts.append(attributes.get("alt", ""))


@pytest.fixture(scope="module")
def evaluated(noisy_dataset: str, good_model, mlflow_server: str, tmp_path_factory) -> dict:
    """One real evaluation of the good model, registered in the real MLflow server with its
    real per-epoch training loss in the run's history."""
    import mlflow

    from components.evaluate.run import EvaluateConfig, evaluate

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mlflow.set_tracking_uri(mlflow_server)
        name = f"eval-{uuid.uuid4().hex[:6]}"
        uri = register(good_model, name, list(LABELS))
        run_id = mlflow.MlflowClient().get_model_version(name, uri.rsplit("/", 1)[1]).run_id
        losses = good_model.history.history["loss"]  # the fixture's training, per epoch
        with mlflow.start_run(run_id=run_id):
            for epoch, loss in enumerate(losses, start=1):
                mlflow.log_metric("loss", loss, step=epoch)
        out = tmp_path_factory.mktemp("evaluated") / "evaluation"
        config = EvaluateConfig(gradcam_per_class=1, target_precision=0.5)
        result = evaluate(uri, noisy_dataset, str(out), config)
    return {"out": out, "uri": uri, "run_id": run_id, "losses": losses, "result": result}


def test_report_metrics_and_mlflow(
    evaluated: dict, noisy_dataset: str, tracking_env: str, tmp_path: Path
) -> None:
    """evaluate() writes JSON, suspects and a self-contained report with every section, and
    logs them to the model's run; the planted mislabelled images show up as suspects."""
    import mlflow

    out, uri, run_id = evaluated["out"], evaluated["uri"], evaluated["run_id"]
    result, losses = evaluated["result"], evaluated["losses"]
    assert result.top1 > 0.8, result
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["top1"]["low"] < summary["top1"]["value"] < summary["top1"]["high"]
    assert np.sum(summary["confusion"]) == summary["images"] == result.images
    assert {row["label"] for row in summary["per_class"]} == set(LABELS)
    suspects = [json.loads(line) for line in (out / "suspects.jsonl").open()]
    assert suspects, "the planted mislabelled images should be flagged"
    planted = [row for row in suspects if "mislabelled_" in row["uri"]]
    assert planted and all(row["predicted"] == "horizontal" for row in planted)
    assert len(planted) >= len(suspects) / 2  # mostly the planted ones, not random images

    html = (out / "report.html").read_text()
    parser = Sections()
    parser.feed(html)
    assert {"header", "model-uri", "model-version", "run-link", "dataset-digest", "report-date",
            "gallerytag-version", "training-curves", "data-quality", "label-balance",
            "confusion-matrix", "pr-curves", "thresholds", "calibration", "grad-cam",
            "gradcam-colour-scale", "suspects"} <= parser.ids  # fmt: skip
    assert {"confusion matrix", "precision-recall curves", "reliability diagram",
            "training curves", "label balance", "grad-cam colour scale"} <= set(
        parser.img_alts
    )  # fmt: skip
    assert "/#/experiments/" in html and f"/runs/{run_id}" in html  # the run link
    assert summary["dataset_hash"] in html and f"{len(losses)} logged" in html
    manifest = dataset.read_manifest(noisy_dataset)
    assert parser.table_rows["ingest-counts-table"] == 5
    assert parser.table_rows["label-balance-table"] == len(LABELS) + 1
    assert f"<td>accepted</td><td>{manifest.totals['accepted']}</td>" in html
    calibration_images = [int(n) for n in re.findall(
        r'<tr><td>[0-9.]+–[0-9.]+</td><td>(\d+)</td>', html)]  # fmt: skip
    assert sum(calibration_images) == summary["images"]  # every test image in a counted bin
    assert 'id="suspects-table" class="left"' in html
    assert html.count('<a href="file:///') >= len(suspects)  # suspects link to their images
    assert sum(alt.startswith("grad-cam") for alt in parser.img_alts) >= len(LABELS)
    assert parser.table_rows["threshold-table"] > 10
    assert parser.table_rows["suspects-table"] == len(suspects) + 1
    assert parser.table_rows["per-class-table"] == len(LABELS) + 3

    run = mlflow.get_run(run_id)
    assert run.data.metrics["test_top1"] == pytest.approx(result.top1)
    assert "test_recall.square" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "evaluation")}
    assert {
        "evaluation/report.html", "evaluation/evaluation.json", "evaluation/policy.json"
    } <= artifacts  # fmt: skip
    assert "probe-floor" in parser.ids and "policy" in parser.ids
    assert summary["probe"]["unavailable"]  # a toy backbone: no pretrained probe to fit
    assert summary["precision"] == "f32" and summary["reduced_precision"] is None
    assert "reduced-precision" not in parser.ids and "test_top1_bf16" not in run.data.metrics

    # The tag step takes its policy from this evaluation by default (target 0.5 is met by
    # keeping everything, so every bar is 0 and nothing goes to review).
    policy = json.loads((out / "policy.json").read_text())
    assert policy["run_id"] == run_id and policy["global_min_score"] == 0.0
    assert summary["policy"]["expected"]["coverage"] == 1.0
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index in range(4):
        (inbox / f"new_{index}.jpg").write_bytes(jpeg_bytes(pattern_image(index % 3, 7 + index)))
    from click.testing import CliRunner

    from gallerytag.cli import cli

    tagged = CliRunner().invoke(
        cli,
        ["tag", str(inbox), "--model", uri, "--out", str(tmp_path / "tags"),
         *IN_MEMORY],
    )  # fmt: skip
    assert tagged.exit_code == 0, tagged.output
    assert "policy from the model's evaluation (target precision 0.5)" in tagged.output
    assert "auto 4 + review 0" in tagged.output
    success = json.loads((tmp_path / "tags" / "_SUCCESS.json").read_text())
    assert success["policy"]["origin"]["source"] == "evaluation"
    assert success["policy"]["origin"]["expected"]["coverage"] == 1.0


def test_bf16_cost_is_measured_beside_the_f32_figures(
    noisy_dataset: str, good_model, tracking_env: str, tmp_path: Path
) -> None:
    """`evaluate --precision bf16` also scores the model through OpenVINO in bf16 (the IR
    exported on the fly, as `tag` does for a version without one): the cost is in
    evaluation.json, predictions.json, the report, MLflow and the CLI line, consistent with
    the per-image predictions; the f32 figures stay Keras's."""
    import mlflow
    from click.testing import CliRunner

    from gallerytag.cli import cli
    from models.openvino_ir import CompiledTagger, export_openvino

    name = f"bf16-{uuid.uuid4().hex[:6]}"
    uri = register(good_model, name, list(LABELS))
    out = tmp_path / "evaluation"
    result = CliRunner().invoke(cli, [
        "evaluate", "--model", uri, "--data", noisy_dataset, "--out", str(out),
        "--precision", "bf16", "--no-probe", "--gradcam-per-class", "0", "--target-precision",
        "0.5",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "evaluation.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    cost = summary["reduced_precision"]
    labels, exact = np.array(predictions["labels"]), np.array(predictions["predicted"])
    lowered = np.array(predictions["predicted_bf16"])
    assert summary["precision"] == "bf16" and len(lowered) == len(labels) == summary["images"]
    assert cost["top1"]["value"] == pytest.approx(np.mean(lowered == labels))
    assert cost["top1"]["low"] <= cost["top1"]["value"] <= cost["top1"]["high"]
    assert 0.0 <= cost["top1_agreement"] <= 1.0
    assert cost["top1_agreement"] == pytest.approx(np.mean(lowered == exact))
    for key in ("top1", "top3"):
        difference = cost[key]["value"] - summary[key]["value"]
        assert cost[f"{key}_difference"] == pytest.approx(difference)
    # The f32 figures are Keras's own, as without --precision.
    images, truth = split_arrays(noisy_dataset, "test")
    keras_scores = np.asarray(good_model.predict_on_batch(images))
    assert np.array_equal(truth, labels)
    assert summary["top1"]["value"] == pytest.approx(np.mean(keras_scores.argmax(1) == truth))
    # The same network compiled here in bf16 says what the CPU runs; a real bf16 run moves
    # the probabilities (bf16 keeps 8 bits of mantissa), a fallback to f32 does not.
    compiled = CompiledTagger(
        str(export_openvino(good_model, tmp_path / "ir", {})), precision="bf16"
    )
    assert cost["ran_as"] == compiled.inference_precision
    assert cost["fell_back"] == (compiled.inference_precision != "bf16")
    if cost["fell_back"]:
        assert cost["max_abs_dp"] <= 1e-4 and "no bf16 support" in result.output
    else:
        assert 1e-6 < cost["max_abs_dp"] < 0.2
        own = compiled.predict(images.astype(np.float32))
        assert np.mean(own.argmax(1) == lowered) >= 0.95  # bf16 predictions of this model
    print("bf16 cost:", {k: v for k, v in cost.items() if k != "note"}, cost["note"])

    assert f"test in bf16: top-1 {cost['top1']['value']:.4f}" in result.output
    assert f"top-1 agreement {cost['top1_agreement']:.4f}" in result.output
    html = (out / "report.html").read_text()
    parser = Sections()
    parser.feed(html)
    assert "reduced-precision" in parser.ids
    assert f"top-1 {cost['top1']['value'] * 100:.1f}%" in html
    run_id = mlflow.MlflowClient().get_model_version(name, uri.rsplit("/", 1)[1]).run_id
    metrics = mlflow.get_run(run_id).data.metrics
    assert metrics["test_top1"] == pytest.approx(summary["top1"]["value"])
    if not cost["fell_back"]:
        assert metrics["test_top1_bf16"] == pytest.approx(cost["top1"]["value"])
        assert metrics["test_top3_bf16"] == pytest.approx(cost["top3"]["value"])
        assert metrics["test_top1_bf16_difference"] == pytest.approx(cost["top1_difference"])
        assert metrics["test_top1_bf16_agreement"] == pytest.approx(cost["top1_agreement"])
        assert metrics["test_bf16_max_abs_dp"] == pytest.approx(cost["max_abs_dp"])
    else:
        assert "test_top1_bf16" not in metrics  # f32 figures are not logged as bf16's


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: apt-get install chromium"
)
def test_report_in_headless_chromium(evaluated: dict, screenshots: Path) -> None:
    """The report opened from disk in Debian's headless Chromium (Playwright, offline): every
    section is laid out and visible, every embedded figure decodes, nothing is fetched from
    the network; the full-page screenshot is `report.png` (docs/images/ via `make screenshots`)."""
    from playwright.sync_api import sync_playwright

    report_url = (evaluated["out"] / "report.html").as_uri()
    requested = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.goto(report_url)
            for section in ("header", "training-curves", "data-quality", "label-balance",
                            "pr-curves", "calibration", "grad-cam", "suspects"):  # fmt: skip
                assert page.locator(f"#{section}").is_visible(), section
            broken = page.evaluate(
                "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length"
            )
            assert broken == 0 and page.locator("img").count() >= 8
            suspect_cell = page.locator("#suspects-table td:nth-child(2)").first
            assert suspect_cell.evaluate("c => getComputedStyle(c).textAlign") == "left"
            page.screenshot(path=str(screenshots / "report.png"), full_page=True)
        finally:
            browser.close()
    assert all(url.startswith(("file://", "data:")) for url in requested), requested
    assert (screenshots / "report.png").stat().st_size > 50_000


def test_gate_moves_the_alias_in_a_real_registry(
    noisy_dataset: str, good_model, tracking_env: str, tmp_path: Path
) -> None:
    """First model passes the floor; a better one takes the alias; a worse one does not."""
    import mlflow

    from components.evaluate.gate import GateConfig
    from components.evaluate.promote import promote

    client = mlflow.MlflowClient()
    name = f"gate-{uuid.uuid4().hex[:6]}"
    untrained = tiny_tagger(len(LABELS), seed=1)
    weak = register(untrained, name, list(LABELS))
    first = promote(weak, noisy_dataset, config=GateConfig(absolute_floor=0.0))
    assert first.promote and first.champion_top1 is None
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    strong = register(good_model, name, list(LABELS))
    decision_file = tmp_path / "decision.json"
    better = promote(strong, noisy_dataset, decision_path=str(decision_file))
    assert better.promote, better.reasons
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    record = json.loads(decision_file.read_text())
    assert record["promote"] and record["champion"] == f"models:/{name}/1"
    assert record["candidate_scores"] == "predicted"  # never evaluated: nothing to reuse
    tags = client.get_model_version(name, "2").tags
    assert tags["gallerytag.gate"] == "pass" and tags["gallerytag.promoted_to"] == "champion"

    again = register(untrained, name, list(LABELS))
    worse = promote(again, noisy_dataset)
    assert not worse.promote
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    tags = client.get_model_version(name, "3").tags
    assert tags["gallerytag.gate"] == "fail" and "gallerytag.promoted_to" not in tags
    same = promote(f"models:/{name}@champion", noisy_dataset)
    assert not same.promote and "already holds" in same.reasons[0]


def test_bad_inputs_give_clear_messages(
    noisy_dataset: str, good_model, tracking_env: str, tmp_path: Path
) -> None:
    """Label map mismatch, an empty test split, a missing champion: one line, exit code 2."""
    from click.testing import CliRunner

    from components.ingest.pipeline import run as ingest
    from gallerytag.cli import cli, main

    name = f"bad-{uuid.uuid4().hex[:6]}"
    wrong_labels = register(good_model, name, ["a", "b", "c"])
    no_test = str(tmp_path / "no-test")
    gallery = write_pattern_gallery(tmp_path / "g", 5, LABELS)
    ingest(str(gallery), no_test, IngestConfig(image_size=SIZE, split_ratios=(0.8, 0.2, 0.0)),
           beam_args=IN_MEMORY)  # fmt: skip
    cases = {
        wrong_labels: (noisy_dataset, "knows labels"),
        f"models:/{name}/1": (no_test, "no 'test' images"),
        f"models:/{name}@champion": (noisy_dataset, "champion"),
    }
    runner = CliRunner()
    for model_uri, (data, message) in cases.items():
        args = ["evaluate", "--model", model_uri, "--data", data, "--out", str(tmp_path / "o")]
        with pytest.raises(SystemExit) as exit_info:
            main_with(args, main)
        assert exit_info.value.code == 2
        result = runner.invoke(cli, args)
        assert message in str(result.exception), (model_uri, result.exception)


def main_with(args: list[str], main) -> None:
    """Run the console entry point with arguments, as a user's shell would."""
    import sys

    saved = sys.argv
    sys.argv = ["gallerytag", *args]
    try:
        main()
    finally:
        sys.argv = saved


def square_image(rng: np.random.Generator, right: bool, size: int = 48) -> tuple:
    """A bright square in the left or right third on a left-to-right colour ramp, with noise;
    the class is where the square sits. Returns (pixels, square box)."""
    ramp = np.linspace(0, 160, size)[None, :, None] * np.array([1.0, 0.2, 0.6])
    image = ramp + rng.normal(0, 12, size=(size, size, 3))
    side = 10
    top = int(rng.integers(0, size - side))
    third = size // 3
    left = int(rng.integers(size - third, size - side) if right else rng.integers(0, third))
    image[top : top + side, left : left + side] = 250
    return np.clip(image, 0, 255).astype(np.float32), (top, left, side)


def test_grad_cam_peaks_inside_the_deciding_square() -> None:
    """On a task decided by the bright square's position, the heat map's peak falls on the
    square (within a 1-pixel rim) for most test images; chance would be about 1 in 9."""
    from components.evaluate.gradcam import grad_cam

    rng = np.random.default_rng(0)
    train = [square_image(rng, bool(i % 2)) for i in range(400)]
    model = tiny_tagger(2, size=48)
    x = np.stack([pixels for pixels, _ in train])
    y = np.arange(400) % 2
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    test = [square_image(rng, bool(i % 2)) for i in range(60)]
    images = np.stack([pixels for pixels, _ in test])
    assert (model.predict(images, verbose=0).argmax(1) == np.arange(60) % 2).mean() > 0.9
    heatmaps = grad_cam(model, images, np.arange(60) % 2)
    assert heatmaps.shape == (60, 48, 48) and heatmaps.max() <= 1.0
    hits = 0
    for heatmap, (_, (top, left, side)) in zip(heatmaps, test, strict=True):
        row, column = np.unravel_index(heatmap.argmax(), heatmap.shape)
        hits += (top - 1 <= row < top + side + 1) and (left - 1 <= column < left + side + 1)
    assert hits / len(test) >= 0.8, hits


def test_grad_cam_explains_a_finer_block_output_and_still_finds_the_square() -> None:
    """With named blocks, Grad-CAM explains the deepest block output one downsampling before
    the final map (24x24 here instead of 12x12), also with a frozen backbone, and the peak
    still falls on the deciding square for most images."""
    import keras

    from components.evaluate.gradcam import grad_cam_with_layer
    from models.head import build_classifier

    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for index, (filters, stride) in enumerate([(16, 1), (32, 2), (32, 2), (32, 1)]):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu",
                                name=f"block_{index}_conv")(x)  # fmt: skip
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="blocky")
    model = build_classifier(backbone, 2, dropout=0.1)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    train = [square_image(rng, bool(i % 2)) for i in range(400)]
    model.fit(np.stack([p for p, _ in train]), np.arange(400) % 2, epochs=6, batch_size=32,
              verbose=0)  # fmt: skip
    backbone.trainable = False  # as the lower blocks of a fine-tuned tagger are
    test = [square_image(rng, bool(i % 2)) for i in range(60)]
    images = np.stack([pixels for pixels, _ in test])
    assert (model.predict(images, verbose=0).argmax(1) == np.arange(60) % 2).mean() > 0.9
    prefixes = tuple(f"block_{i}_" for i in range(4))
    heatmaps, layer, cells = grad_cam_with_layer(model, images, np.arange(60) % 2, prefixes)
    assert (layer, cells) == ("block_1_conv", (24, 24))
    assert heatmaps.shape == (60, 48, 48) and heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    hits = 0
    for heatmap, (_, (top, left, side)) in zip(heatmaps, test, strict=True):
        row, column = np.unravel_index(heatmap.argmax(), heatmap.shape)
        hits += (top - 1 <= row < top + side + 1) and (left - 1 <= column < left + side + 1)
    assert hits / len(test) >= 0.8, hits


def test_data_quality_counts_come_from_a_real_ingest(tmp_path: Path) -> None:
    """The report's data-quality figures equal what ingest wrote: totals and rejections by
    reason from the manifest, duplicates by kind (and those in a group whose labels disagree)
    from duplicates.jsonl, and images per label and split."""
    from components.evaluate.run import data_quality
    from components.ingest.pipeline import run as ingest
    from tests.conftest import write_broken_files

    gallery = write_pattern_gallery(tmp_path / "gallery", 12, LABELS)
    copy = (gallery / "square" / "square_000.jpg").read_bytes()
    (gallery / "square" / "again.jpg").write_bytes(copy)  # exact duplicate, same label
    (gallery / "vertical" / "elsewhere.jpg").write_bytes(copy)  # ... under another label
    broken = write_broken_files(gallery / "horizontal")
    out = str(tmp_path / "dataset")
    ingest(str(gallery), out, IngestConfig(image_size=SIZE), beam_args=IN_MEMORY)
    manifest = dataset.read_manifest(out)
    quality = data_quality(out, manifest)
    assert quality["totals"] == manifest.totals and manifest.totals["rejected"] == len(broken)
    assert sum(quality["rejected_reasons"].values()) == len(broken)
    assert sorted(quality["rejected_reasons"]) == sorted(set(broken.values()))
    # Both dropped copies belong to a group whose copies carry different labels.
    assert quality["duplicate_kinds"] == {"exact": 2}
    assert quality["duplicate_label_conflicts"] == 2
    per_label = {row["label"]: row["train"] + row["validation"] + row["test"]
                 for row in quality["balance"]}  # fmt: skip
    assert per_label == {"horizontal": 12, "square": 12, "vertical": 12}
