"""The embedded path for real: Beam ingest -> horovodrun -np 2 -> MLflow -> evaluate -> Beam tag.

One module-scoped run, several assertions about what it left in MLflow and on disk.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from components.ingest.core import IngestConfig
from tests.conftest import (
    CHAIN_GATE,
    jpeg_bytes,
    pattern_image,
    write_broken_files,
    write_pattern_gallery,
)

pytestmark = pytest.mark.slow
LABELS = ("horizontal", "square", "vertical")
IN_MEMORY = ["--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> dict:
    """Run ingest and a 2-worker training once for the module."""
    import mlflow

    from components.ingest.pipeline import run as ingest
    from components.train.config import TrainConfig
    from components.train.launcher import train

    root = tmp_path_factory.mktemp("e2e")
    gallery = write_pattern_gallery(root / "gallery", 40, LABELS)
    write_broken_files(gallery / "square")
    dataset_dir = str(root / "dataset")
    summary = ingest(str(gallery), dataset_dir, IngestConfig(image_size=64), beam_args=IN_MEMORY)
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    config = TrainConfig(
        data=dataset_dir,
        workers=2,
        batch_size=8,
        head_epochs=2,
        finetune_epochs=1,
        learning_rate=3e-3,
        experiment=name,
        registered_model=name,
    )
    mlflow.set_tracking_uri(mlflow_server)
    result = train(config, mlflow_server)
    return {"root": root, "dataset": dataset_dir, "ingest": summary, "result": result,
            "config": config, "uri": mlflow_server}  # fmt: skip


def test_ingest_rejected_the_broken_files(trained: dict) -> None:
    """The truncated, empty and text files are rejected; seen adds up."""
    summary = trained["ingest"]
    assert summary.rejected == 3 and summary.accepted == 120
    assert summary.seen == summary.accepted + summary.rejected + summary.duplicates


def test_one_training_is_one_mlflow_run(trained: dict) -> None:
    """Two Horovod ranks, one run, with params, per-epoch metrics and tags."""
    import mlflow

    client = mlflow.MlflowClient(trained["uri"])
    experiment = client.get_experiment_by_name(trained["config"].experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == trained["result"].run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone"] == "efficientnet_lite0"
    assert run.data.params["workers"] == "2"
    assert run.data.tags["world_size"] == "2"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 3
    assert float(run.data.tags["gallerytag.check.logged_model_max_abs_diff"]) <= 1e-5
    assert "logged_model_max_abs_diff" not in run.data.metrics
    # The IR logged beside it, checked against Keras (an internal check: a tag).
    assert float(run.data.tags["gallerytag.check.openvino_max_abs_diff"]) <= 1e-4


@pytest.fixture(scope="module")
def evaluated(trained: dict):
    """Evaluate the trained version once for the module (writes policy.json to its run)."""
    import mlflow

    from components.evaluate.run import evaluate

    mlflow.set_tracking_uri(trained["uri"])
    result = trained["result"]
    model_uri = f"models:/{result.registered_model}/{result.version}"
    return evaluate(model_uri, trained["dataset"], str(trained["root"] / "evaluation"))


def test_registered_model_evaluates_and_is_promoted(
    trained: dict, evaluated, tracking_env: str
) -> None:
    """The registered version loads back, beats chance clearly, gets a report, and as the
    first model it takes the champion alias."""
    import mlflow

    from components.evaluate.promote import promote

    result = trained["result"]
    model_uri = f"models:/{result.registered_model}/{result.version}"
    evaluation = evaluated
    assert evaluation.images > 0
    assert evaluation.top1 >= 0.8, evaluation
    report = Path(evaluation.report).read_text()
    assert "Confusion matrix" in report
    # The floor is measured every time: the frozen Lite0's linear probe on the same images.
    summary = json.loads((trained["root"] / "evaluation" / "evaluation.json").read_text())
    assert summary["probe"]["backbone"] == "efficientnet_lite0"
    assert evaluation.probe_top1 == summary["probe"]["top1"]["value"] > 0.5
    assert "vs probe" in report
    run = mlflow.get_run(result.run_id)
    assert run.data.metrics["test_top1_probe"] == pytest.approx(evaluation.probe_top1)
    assert "val_accuracy_probe" in run.data.metrics and "probe_c" in run.data.params
    decision_file = trained["root"] / "decision.json"
    decision = promote(
        model_uri, trained["dataset"], config=CHAIN_GATE, decision_path=str(decision_file)
    )
    assert decision.promote and decision.probe_top1 == pytest.approx(evaluation.probe_top1)
    # The gate reuses the evaluation's predictions and probe instead of computing them again.
    assert json.loads(decision_file.read_text())["candidate_scores"] == "reused from its evaluation"
    champion = mlflow.MlflowClient().get_model_version_by_alias(result.registered_model, "champion")
    assert champion.version == str(result.version)


def test_tag_a_folder_accounts_for_every_file(trained: dict, tracking_env: str) -> None:
    """Beam tagging writes one row per good image and rejects the broken ones."""
    from components.common.tracking import fetch_tagger
    from components.tag.pipeline import run as tag

    inbox = trained["root"] / "inbox"
    (inbox / "nested").mkdir(parents=True)
    names = []
    for index in range(12):
        folder = inbox if index % 2 else inbox / "nested"
        path = folder / f"img_{index}.jpg"
        path.write_bytes(jpeg_bytes(pattern_image(index % 3, seed=50_000 + index)))
        names.append(path.name)
    broken = write_broken_files(inbox)
    result = trained["result"]
    tagger = fetch_tagger(
        f"models:/{result.registered_model}/{result.version}", str(trained["root"] / "m")
    )
    assert tagger.openvino_model  # logged at registration: nothing to export
    out = trained["root"] / "tags"
    summary = tag(str(inbox), str(out), tagger, beam_args=IN_MEMORY, runtime="auto")
    assert summary.runtime == "openvino" and summary.seen == 15
    assert summary.auto + summary.review == 12 and summary.rejected == 3

    rows = [json.loads(line) for shard in out.glob("tags-*.jsonl") for line in shard.open()]
    assert sorted(Path(r["uri"]).name for r in rows) == sorted(names)
    for row in rows:
        assert row["top1"] in LABELS and row["status"] in ("auto", "review")
        assert np.isclose(row["labels"][0]["score"], row["score"])
        assert row["model_version"] == result.version
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert {Path(r["uri"]).name: r["reason"] for r in rejected} == broken
    review = (out / "review.jsonl").read_text().splitlines()
    assert len(review) == summary.review
    # _SUCCESS.json must describe the files a reader finds, not what the run believed.
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["seen"] == len(rows) + len(rejected) == 15
    for status in ("auto", "review"):
        assert success[status] == sum(row["status"] == status for row in rows)
    assert success["rejected"] == len(rejected)
    assert success["review"] == len(review)


def test_default_policy_keeps_its_promised_precision(
    trained: dict, evaluated, tracking_env: str
) -> None:
    """Tagging with no threshold flags uses the evaluation's policy.json, and on labelled
    images the model never saw, the precision of the auto rows reaches the target within
    its 95% interval."""
    from components.common.tracking import fetch_tagger
    from components.evaluate.core import wilson_interval
    from components.tag.pipeline import run as tag
    from components.tag.policy_source import choose_policy, describe

    inbox = trained["root"] / "held-out"
    truth = {}
    for index in range(90):
        kind = index % 3
        path = inbox / f"held_{index}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(jpeg_bytes(pattern_image(kind, seed=90_000 + index)))
        truth[path.name] = LABELS[kind]  # write_pattern_gallery's label of this kind
    result = trained["result"]
    tagger = fetch_tagger(
        f"models:/{result.registered_model}/{result.version}", str(trained["root"] / "m2")
    )
    policy = choose_policy(tagger, None, "model", str(trained["root"] / "m2"))
    assert policy.origin["source"] == "evaluation" and not policy.review_all
    target = policy.origin["target_precision"]
    assert "policy from the model's evaluation" in describe(policy)
    out = trained["root"] / "held-out-tags"
    summary = tag(str(inbox), str(out), tagger, policy, beam_args=IN_MEMORY)
    rows = [json.loads(line) for shard in out.glob("tags-*.jsonl") for line in shard.open()]
    auto = [row for row in rows if row["status"] == "auto"]
    assert summary.auto == len(auto) > 0
    right = sum(row["top1"] == truth[Path(row["uri"]).name] for row in auto)
    precision = wilson_interval(right, len(auto))
    assert precision.high >= target, (precision, target)
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["policy"]["origin"]["target_precision"] == target
