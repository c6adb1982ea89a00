"""Rank 0's MLflow work: one training is one MLflow run, logged by the chief only.

The other ranks train the same weights and log nothing (Horovod), so everything that touches
MLflow, the checkpoint files or the result file lives here, apart from the training loop.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import horovod.tensorflow as hvd
import numpy as np

from components.common import storage
from components.common.probe import LinearProbe
from components.common.tracking import log_openvino_ir, model_metadata
from components.train import checkpoint
from components.train.checkpoint import TrainingState
from components.train.config import TrainConfig

if TYPE_CHECKING:
    from components.common.dataset import Manifest
    from components.train.worker import Trainer

# What a served copy of the tagger needs (the pyfunc flavour's pip requirements).
PIP_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "keras==3.15.1", "pillow==12.3.0", "fsspec==2026.9.0"]


def train_and_log(
    trainer: Trainer,
    config: TrainConfig,
    manifest: Manifest,
    probe: LinearProbe | None,
    resumed: bool,
    result_path: str | None,
) -> None:
    """Rank 0: train inside one MLflow run (continued on resume), then log and register
    the model, write the result file and clear the checkpoint."""
    import mlflow

    from components.common import lineage

    lineage.set_up_experiment(config.experiment)
    data = lineage.mlflow_dataset(config.data, manifest)
    # A resumed training continues its MLflow run instead of leaving a dead duplicate.
    with mlflow.start_run(
        run_id=trainer.state.run_id if resumed else None,
        run_name=None if resumed else config.run_name or lineage.default_run_name(
            config.registered_model, config.data),
        tags=None if resumed else lineage.source_tags("gallerytag train", git_commit()),
    ) as run:  # fmt: skip
        trainer.state.run_id = run.info.run_id
        if resumed:
            print(f"resuming run {run.info.run_id} after epoch {trainer.state.epochs_done}")
            mlflow.set_tag("resumed_after_epoch", str(trainer.state.epochs_done))
            log_checkpointed_epoch(run.info.run_id, trainer.state, data)
        else:
            log_run_start(trainer, config, manifest, data)
        if probe is not None:
            log_probe(probe)
        trainer.train(on_epoch=lambda *epoch: log_epoch(*epoch, dataset=data), save=save_checkpoint)
        if trainer.wise_validation:
            log_wise(config.wise_alpha, trainer.wise_validation)
        if trainer.out_of_time:
            print(f"time budget of {config.time_budget_minutes} min reached after epoch "
                  f"{trainer.state.epochs_done}: stopped there", flush=True)  # fmt: skip
            mlflow.set_tag("gallerytag.stopped_by", "time budget")
        mlflow.log_dict(json.loads(config.to_json()), "config.json")
        log_training_curves(run.info.run_id)
        result = {"run_id": run.info.run_id, **log_model(trainer, config, data)}
        page = lineage.run_url(mlflow.get_tracking_uri(), run.info.experiment_id, run.info.run_id)
    if result_path:
        storage.write_text(result_path, json.dumps(result))
    if config.checkpoint_dir:
        checkpoint.clear(config.checkpoint_dir)
    print(f"training finished: run {result['run_id']} ({run.info.run_name}), model "
          f"{result['model_uri']}" + (f"; {page}" if page else ""), flush=True)  # fmt: skip


def log_run_start(trainer: Trainer, config: TrainConfig, manifest: Manifest, data) -> None:
    """A new run's parameters, dataset input and tags."""
    import mlflow

    from components.common import lineage

    mlflow.log_params(lineage.training_params(config.as_params(), hvd.size()))
    lineage.log_dataset_input(data, "training")
    mlflow.set_tags(
        {
            "dataset_hash": manifest.dataset_hash,
            "backbone": config.backbone,
            "world_size": str(hvd.size()),
            "git_commit": git_commit(),
            "gallerytag.step": "train",
        }
    )
    mlflow.log_param("finetune_epochs_planned", trainer.phases[1].epochs)


def log_probe(probe: LinearProbe) -> None:
    """The linear probe that initialised the head: its C and validation top-1."""
    import mlflow

    print(f"linear probe (head init): C={probe.c}, validation top-1 "
          f"{probe.validation_accuracy}", flush=True)  # fmt: skip
    mlflow.log_param("probe_c", probe.c)
    if probe.validation_accuracy is not None:
        mlflow.log_metric("val_accuracy_probe", probe.validation_accuracy)


def log_epoch(phase: str, epoch: int, metrics: dict[str, float], dataset=None) -> None:
    """Rank 0: print and record one epoch in MLflow."""
    record_epoch(metrics, epoch, dataset)
    shown = " ".join(f"{key}={value:.4g}" for key, value in metrics.items())
    print(f"epoch {epoch} ({phase}): {shown}", flush=True)


def log_wise(alpha: float, validation: dict[str, float]) -> None:
    """Rank 0: record the validation figures of the WiSE-FT interpolation that ships."""
    import mlflow

    mlflow.log_metrics({f"val_{key}_wise": value for key, value in validation.items()})
    print(f"WiSE-FT alpha {alpha}: validation top-1 {validation['accuracy']:.3f}", flush=True)


def record_epoch(metrics: dict[str, float], epoch: int, dataset=None) -> None:
    """One epoch's metrics; the validation figures linked to the dataset they were measured
    on (MLflow 3), which is how the logged model comes to list the dataset."""
    import mlflow

    validation = {key: value for key, value in metrics.items() if key.startswith("val_")}
    mlflow.log_metrics({k: v for k, v in metrics.items() if k not in validation}, step=epoch)
    if validation:
        mlflow.log_metrics(validation, step=epoch, dataset=dataset)


def log_checkpointed_epoch(run_id: str, state: TrainingState, dataset=None) -> None:
    """Rank 0, on resume: log the checkpointed epoch if the kill came before its metrics
    reached MLflow (checkpoint first, then log: each epoch is logged exactly once)."""
    import mlflow

    if not state.last_epoch_metrics or state.epochs_done < 1:
        return
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    if all(metric.step != state.epochs_done for metric in history):
        record_epoch(state.last_epoch_metrics, state.epochs_done, dataset)


def log_training_curves(run_id: str) -> None:
    """Rank 0: plot loss and accuracy per epoch from the run's own metric history."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    import mlflow

    client = mlflow.MlflowClient()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            if history:
                axis.plot([m.step for m in history], [m.value for m in history], style, label=key)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    mlflow.log_figure(figure, "training_curves.png")
    plt.close(figure)


def log_model(trainer: Trainer, config: TrainConfig, dataset=None) -> dict:
    """Rank 0: log the trained model (Keras + image pyfunc flavours) with metadata and its
    OpenVINO IR, link it to the dataset, and register it (last, so a registered version is
    complete when it appears)."""
    import mlflow
    import mlflow.keras

    from components.common import lineage, serving

    size = trainer.manifest.image_size
    probe = next(iter(trainer.probe_batch())).numpy()
    expected = np.asarray(trainer.model.predict_on_batch(probe))
    info = serving.log_tagger_model(
        trainer.model,
        model_metadata(
            trainer.manifest.labels,
            size,
            trainer.manifest.resize_mode,
            multi_label=False,
            backbone=config.backbone,
            weights=config.weights,
        ),
        PIP_REQUIREMENTS,
        None,  # registered below, once the IR is logged too
    )
    if dataset is not None and trainer.state.epochs_done > 0:
        validation = {key for key in trainer.state.last_epoch_metrics if key.startswith("val_")}
        lineage.link_model_metrics(
            mlflow.active_run().info.run_id, info.model_id, trainer.state.epochs_done,
            dataset, validation,
        )  # fmt: skip
    # Verify what we ship: the logged model must predict exactly what the trained one does.
    reloaded = mlflow.keras.load_model(info.model_uri)
    difference = float(np.max(np.abs(np.asarray(reloaded.predict_on_batch(probe)) - expected)))
    lineage.set_check("logged_model_max_abs_diff", difference)
    if difference > 1e-5:
        raise RuntimeError(f"logged model differs from the trained one by {difference}")
    ir_difference = log_openvino_ir(info.model_uri, info.model_id, probe)
    if ir_difference is not None:
        lineage.set_check("openvino_max_abs_diff", ir_difference)
    version = None
    if config.registered_model:
        version = mlflow.register_model(info.model_uri, config.registered_model).version
    mlflow.log_dict({"labels": trainer.manifest.labels}, "label_map.json")
    mlflow.log_dict(
        {"image_size": size, "resize_mode": trainer.manifest.resize_mode, "input": "RGB 0..255"},
        "preprocessing.json",
    )
    return {
        "model_uri": info.model_uri,
        "registered_model": config.registered_model,
        "version": str(version) if version else None,
    }


def save_checkpoint(trainer: Trainer) -> None:
    """Rank 0: write this epoch's checkpoint (other ranks pass a no-op)."""
    if trainer.checkpoint_dir:
        checkpoint.save(
            trainer.checkpoint_dir,
            trainer.state,
            trainer.model,
            trainer.optimizer,
            trainer.best_weights,
            trainer.start_weights,
        )


def git_commit() -> str:
    """The source commit, for the run's tags ("unknown" outside a git checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
