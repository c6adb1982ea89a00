"""Training under horovodrun: logged metrics are cross-rank averages; a SIGKILLed training
resumes from its checkpoint into the same MLflow run and ends with all its epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from components.ingest.core import IngestConfig
from components.ingest.pipeline import run as ingest
from components.train.config import TrainConfig
from tests.conftest import write_pattern_gallery

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3 labels x 24 synthetic images at 48 px."""
    root = tmp_path_factory.mktemp("resume")
    gallery = write_pattern_gallery(root / "gallery", 24, ("horizontal", "square", "vertical"))
    out = str(root / "dataset")
    ingest(str(gallery), out, IngestConfig(image_size=48), ["--direct_running_mode=in_memory"])
    return out


def _config(data: str, tmp_path: Path, **overrides) -> TrainConfig:
    name = f"t-{uuid.uuid4().hex[:8]}"
    settings = dict(
        data=data, workers=2, batch_size=8, head_epochs=2, finetune_epochs=2,
        schedule="constant", experiment=name, registered_model=name,
        checkpoint_dir=str(tmp_path / "ckpt"),
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def test_logged_metrics_are_cross_rank_averages(small_dataset, tracking_env, tmp_path):
    """Each epoch's logged loss is the mean of the two ranks' own losses."""
    import mlflow

    from components.train.launcher import train

    config = _config(small_dataset, tmp_path, finetune_blocks=0, rank_stats_dir=str(tmp_path))
    result = train(config, tracking_env)
    logged = {
        m.step: m.value for m in mlflow.MlflowClient().get_metric_history(result.run_id, "loss")
    }
    ranks = [
        {
            row["epoch"]: row["loss"]
            for row in map(json.loads, (tmp_path / f"rank{r}.jsonl").read_text().splitlines())
        }
        for r in (0, 1)
    ]
    assert sorted(logged) == [1, 2]
    for epoch, value in logged.items():
        own = [ranks[0][epoch], ranks[1][epoch]]
        assert own[0] != own[1]  # the ranks saw different data
        assert value == pytest.approx(sum(own) / 2, rel=1e-6)


def _kill_tree(process: subprocess.Popen) -> None:
    parent = psutil.Process(process.pid)
    for child in parent.children(recursive=True):
        child.kill()
    parent.kill()
    process.wait(timeout=30)


def test_sigkilled_training_resumes_into_the_same_run(small_dataset, tracking_env, tmp_path):
    """Kill all processes after the first checkpoint; the rerun finishes the same run."""
    import mlflow

    from components.train.launcher import train

    config = _config(small_dataset, tmp_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(config.to_json())
    code = (
        "import sys; from components.train.config import TrainConfig;"
        "from components.train.launcher import train;"
        "train(TrainConfig.from_json(open(sys.argv[1]).read()), sys.argv[2])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.Popen(
        [sys.executable, "-c", code, str(config_file), tracking_env],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    state_file = Path(config.checkpoint_dir) / "state.json"
    deadline = time.monotonic() + 240
    while not state_file.exists():
        assert first.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.2)
    # A second identical training while the first lives is refused (it used to resume from
    # the live checkpoint and write into the same MLflow run).
    from components.common.claim import OutputBusy

    with pytest.raises(OutputBusy, match="already running"):
        train(config, tracking_env)
    _kill_tree(first)
    state = json.loads(state_file.read_text())
    assert 1 <= state["epochs_done"] < 4

    result = train(config, tracking_env)

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [state["run_id"]] == [result.run_id]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["resumed_after_epoch"] == str(state["epochs_done"])
    # WiSE-FT ran on both ranks after the resume, from the start weights in the checkpoint.
    assert 0.0 <= runs[0].data.metrics["val_accuracy_wise"] <= 1.0
    # Every epoch exactly once: counted, not deduplicated (a resumed epoch once logged twice).
    for metric in ("val_loss", "loss", "learning_rate_effective"):
        steps = [m.step for m in client.get_metric_history(result.run_id, metric)]
        assert sorted(steps) == [1, 2, 3, 4], (metric, steps)
    assert client.get_model_version(config.registered_model, result.version).status == "READY"
    assert not Path(config.checkpoint_dir).exists()


def test_time_budget_bounds_training(small_dataset, tracking_env, tmp_path):
    """A budget shorter than one epoch: training stops after its first epoch (of 32
    planned), still logs and registers the model, and says why it stopped."""
    import mlflow

    from components.train.launcher import train

    config = _config(
        small_dataset, tmp_path, workers=1, finetune_epochs=30, time_budget_minutes=0.001
    )
    result = train(config, tracking_env)
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(result.run_id, "loss")]
    assert steps == [1]
    run = client.get_run(result.run_id)
    assert run.data.tags["gallerytag.stopped_by"] == "time budget"
    assert client.get_model_version(config.registered_model, result.version).status == "READY"
