"""MLflow as its users expect it, against a real `mlflow server`: one real training (ingest ->
train -> evaluate -> promote), then what the run, the logged model, the model version and
`mlflow models serve -m models:/NAME@champion` show."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import requests

from components.common import lineage
from components.ingest.core import IngestConfig
from components.train.config import TrainConfig
from tests.conftest import CHAIN_GATE, jpeg_bytes, pattern_image, write_pattern_gallery

LABELS = ("horizontal", "square", "vertical")  # write_pattern_gallery's kinds 0, 1, 2
IN_MEMORY = ["--direct_running_mode=in_memory"]


def test_default_run_name_and_rate_params() -> None:
    """Run names say model, dataset and UTC time; learning rates say per worker or effective."""
    moment = datetime(2026, 12, 1, 14, 3, 9, tzinfo=UTC)
    assert lineage.default_run_name("rooms", "gs://b/data/clipart8/", moment) == (
        "rooms-clipart8-20261201-140309"
    )
    params = lineage.training_params(
        {"learning_rate": "0.001", "finetune_learning_rate": "0.0001", "workers": "2"}, 2
    )
    assert "learning_rate" not in params and "finetune_learning_rate" not in params
    assert params["learning_rate_per_worker"] == "0.001"
    assert float(params["learning_rate_effective"]) == pytest.approx(0.002)
    assert float(params["finetune_learning_rate_effective"]) == pytest.approx(0.0002)


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> dict:
    """Ingest, a one-worker training, evaluation and promotion, once for the module."""
    import mlflow

    from components.common.dataset import read_manifest
    from components.evaluate.promote import promote
    from components.evaluate.run import EvaluateConfig, evaluate
    from components.ingest.pipeline import run as ingest
    from components.train.launcher import train

    root = tmp_path_factory.mktemp("lineage")
    gallery = write_pattern_gallery(root / "gallery", 20, LABELS)
    data = str(root / "patterns")
    ingest(str(gallery), data, IngestConfig(image_size=48), beam_args=IN_MEMORY)
    name = f"lineage-{uuid.uuid4().hex[:8]}"
    config = TrainConfig(
        data=data, workers=1, batch_size=8, finetune_epochs=2, finetune_blocks=2,
        experiment=name, registered_model=name, checkpoint_dir=str(root / "ckpt"),
    )  # fmt: skip
    mlflow.set_tracking_uri(mlflow_server)
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server  # the training's own server check
    result = train(config, mlflow_server)
    version_uri = f"models:/{name}/{result.version}"
    evaluate(version_uri, data, str(root / "evaluation"), EvaluateConfig(gradcam_per_class=1))
    decision = promote(version_uri, data, config=CHAIN_GATE)
    assert decision.promote, decision
    return {"root": root, "data": data, "manifest": read_manifest(data), "result": result,
            "name": name, "uri": mlflow_server}  # fmt: skip


@pytest.mark.slow
def test_run_lists_dataset_and_is_named(promoted: dict) -> None:
    """The run has the dataset as input (digest = dataset hash), a name and a source; its
    internal check is a tag, and the learning rates say what they are."""
    import mlflow

    client = mlflow.MlflowClient(promoted["uri"])
    run = client.get_run(promoted["result"].run_id)
    manifest = promoted["manifest"]
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    found = inputs[0]
    assert found.dataset.digest == manifest.dataset_hash[: lineage.DIGEST_CHARS]
    assert found.dataset.name == "patterns"
    assert json.loads(found.dataset.source)["uri"] == promoted["data"]
    tags = {tag.key: tag.value for tag in found.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags[lineage.DATASET_HASH_TAG] == manifest.dataset_hash
    profile = json.loads(found.dataset.profile)
    assert profile["counts"] == manifest.counts
    assert profile["labels"] == {label: 20 for label in LABELS}
    assert sum(profile["splits"].values()) == 60
    # The evaluation used the same dataset on the same run.
    assert run.data.tags["gallerytag.dataset.evaluation"] == found.dataset.digest

    assert re.fullmatch(rf"{promoted['name']}-patterns-\d{{8}}-\d{{6}}", run.info.run_name)
    assert run.data.tags["mlflow.source.name"] == "gallerytag train"
    assert run.data.tags["mlflow.source.type"] == "JOB"
    assert not [key for key in run.data.metrics if "max_abs_diff" in key]
    assert float(run.data.tags["gallerytag.check.logged_model_max_abs_diff"]) <= 1e-5
    assert "learning_rate" not in run.data.params and "learning_rate" not in run.data.metrics
    rate = TrainConfig().finetune_learning_rate  # the default; one worker: effective = per worker
    assert float(run.data.params["finetune_learning_rate_per_worker"]) == pytest.approx(rate)
    assert float(run.data.params["finetune_learning_rate_effective"]) == pytest.approx(rate)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "learning_rate_effective")]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[lineage.EXPERIMENT_KIND_TAG] == lineage.EXPERIMENT_KIND


@pytest.mark.slow
def test_logged_model_lists_dataset(promoted: dict) -> None:
    """The logged model's metrics (training's validation and the evaluation's test figures)
    name the dataset, which is what the MLflow UI lists as the model's datasets."""
    import mlflow

    client = mlflow.MlflowClient(promoted["uri"])
    run = client.get_run(promoted["result"].run_id)
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    digest = promoted["manifest"].dataset_hash[: lineage.DIGEST_CHARS]
    linked = {m.key for m in model.metrics if m.dataset_digest == digest}
    assert {"val_loss", "val_accuracy", "test_top1"} <= linked, linked
    assert {m.dataset_name for m in model.metrics if m.key == "test_top1"} == {"patterns"}
    assert model.tags[lineage.DATASET_HASH_TAG] == promoted["manifest"].dataset_hash


@pytest.mark.slow
def test_version_description_has_evaluation_and_gate(promoted: dict) -> None:
    """The registered version's description carries the evaluation and the gate decision."""
    import mlflow

    client = mlflow.MlflowClient(promoted["uri"])
    version = client.get_model_version(promoted["name"], promoted["result"].version)
    text = version.description
    assert "## Evaluation" in text and "top-1 " in text and "95% CI" in text
    assert "## Promotion gate: pass" in text and "champion none (first model)" in text


def _serve(model_uri: str, tracking_uri: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` on a free loopback port, without gallerytag on the path."""
    from components.common.tracking import _free_port

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    # The scoring server execs `uvicorn` from PATH: the venv's bin, as in an activated venv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    log = (cwd / "serve.log").open("wb")
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        assert process.poll() is None, (cwd / "serve.log").read_text()[-3000:]
        try:
            if requests.get(f"{url}/ping", timeout=2).ok:
                return process, url
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the scoring server did not answer in 4 minutes"
        time.sleep(1)


@pytest.mark.slow
def test_champion_serves_images_over_rest(promoted: dict) -> None:
    """`mlflow models serve -m models:/NAME@champion` answers a POST of real JPEGs with
    label names, the scores `tag` computes, top-k and the evaluation's policy status."""
    from components.common.images import load_for_model
    from components.common.tracking import fetch_tagger

    root = promoted["root"]
    images = [jpeg_bytes(pattern_image(kind, seed=70_000 + kind)) for kind in range(3)]
    serve_dir = root / "serve"
    serve_dir.mkdir()
    process, url = _serve(f"models:/{promoted['name']}@champion", promoted["uri"], serve_dir)
    try:
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(image).decode()] for image in images] + [["bm90"]],
            },
            "params": {"top_k": 2},
        }
        response = requests.post(f"{url}/invocations", json=body, timeout=120)
        assert response.status_code == 200, response.text
        rows = response.json()["predictions"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    tagger = fetch_tagger(f"models:/{promoted['name']}@champion", str(root / "champion"))
    pixels = np.stack([load_for_model(i, tagger.image_size, tagger.resize_mode) for i in images])
    expected = np.asarray(tagger.load().predict_on_batch(pixels.astype(np.float32)))
    assert len(rows) == 4
    for row, probabilities in zip(rows[:3], expected, strict=True):
        assert row["label"] == LABELS[int(probabilities.argmax())]
        assert row["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)
        assert [entry["label"] for entry in row["top_k"]] == [
            LABELS[i] for i in np.argsort(-probabilities)[:2]
        ]
        assert row["status"] in ("auto", "review")
        # The evaluation's policy.json travelled into the model: bars, not "not evaluated".
        assert "not evaluated" not in (row["reason"] or "")
    assert [row["label"] for row in rows[:3]] == list(LABELS)  # the model tells them apart
    assert rows[3]["status"] == "rejected" and rows[3]["label"] is None


CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing")
def test_mlflow_ui_shows_runs_dataset_and_report(promoted: dict, screenshots: Path) -> None:
    """Headless Chromium on the MLflow UI: the experiment link opens on the runs table (not
    the GenAI overview), the run page lists the dataset, and its artifacts hold the report;
    screenshots: mlflow-*.png (docs/images/ via `make screenshots`)."""
    import mlflow
    from playwright.sync_api import expect, sync_playwright

    run = mlflow.MlflowClient(promoted["uri"]).get_run(promoted["result"].run_id)
    experiment_id = run.info.experiment_id
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(lineage.experiment_url(promoted["uri"], experiment_id))
            expect(page.get_by_text(run.info.run_name).first).to_be_visible(timeout=60_000)
            assert f"/experiments/{experiment_id}/runs" in page.url, page.url
            page.screenshot(path=str(screenshots / "mlflow-experiment.png"))

            page.goto(lineage.run_url(promoted["uri"], experiment_id, run.info.run_id))
            expect(page.get_by_text("patterns").first).to_be_visible(timeout=60_000)
            page.screenshot(path=str(screenshots / "mlflow-run.png"), full_page=True)

            page.goto(
                f"{promoted['uri']}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
                f"/artifacts/evaluation/report.html{lineage.UI_QUERY}"
            )
            expect(page.get_by_text("report.html").first).to_be_visible(timeout=60_000)
            # The UI previews HTML artifacts in an iframe: wait until the report has drawn.
            report = page.frame_locator("iframe").first.locator("h1, h2").first
            expect(report).to_be_visible(timeout=60_000)
            page.screenshot(path=str(screenshots / "mlflow-run-artifacts.png"))
        finally:
            browser.close()
