"""One training process: `horovodrun -np N python -m components.train.worker --config F`.

Runs unchanged as a single process, under horovodrun on one machine, or under an MPIJob
launcher on Kubernetes. Rank 0 alone talks to MLflow and writes the result file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import horovod.tensorflow as hvd
import keras
import numpy as np
import tensorflow as tf

from components.common import dataset
from components.common.tfdata import make_dataset
from components.common.tracking import model_metadata
from components.train.config import TrainConfig
from components.train.loop import (
    EpochStats,
    allreduce_sums,
    broadcast_state,
    evaluate,
    make_train_step,
    warmup_learning_rate,
)
from models.head import build_classifier, set_trainable_top_blocks
from models.registry import BACKBONES, build_backbone

log = logging.getLogger("gallerytag.train")
PIP_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "keras==3.15.1"]


def configure_devices() -> None:
    """Give each local worker one GPU, or a fair share of the CPU cores."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        # Horovod: one GPU per process, chosen by local rank, so workers never share a device.
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")
    else:
        # Horovod: N processes on one CPU host would oversubscribe cores with TF's default pools.
        threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(2)


class Trainer:
    """Owns the model, data and step counter across the two fine-tuning phases."""

    def __init__(self, config: TrainConfig, manifest: dataset.Manifest) -> None:
        self.config = config
        self.manifest = manifest
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.global_step = 0
        self.epoch = 0
        train_files = dataset.shard_paths(config.data, manifest, "train")
        self.validation_files = dataset.shard_paths(config.data, manifest, "validation")
        # Horovod: every worker reads its own 1/size of the records.
        self.train_batches = iter(
            make_dataset(
                train_files,
                manifest.image_size,
                config.batch_size,
                training=True,
                augment=config.augment,
                num_shards=hvd.size(),
                shard_index=hvd.rank(),
                seed=config.seed,
            )
        )
        # Horovod: all workers take the same number of steps, or an allreduce would hang.
        global_batch = config.batch_size * hvd.size()
        self.steps_per_epoch = max(1, manifest.split_size("train") // global_batch)
        weights = None if config.weights == "none" else config.weights
        self.backbone = build_backbone(config.backbone, manifest.image_size, weights=weights)
        self.model = build_classifier(self.backbone, len(manifest.labels), config.dropout)

    def run_phase(self, name: str, epochs: int, base_lr: float, on_epoch) -> None:
        """Train `epochs` epochs with a fresh optimizer on the currently trainable weights."""
        if epochs <= 0:
            return
        optimizer = keras.optimizers.Adam(learning_rate=base_lr)
        broadcast_state(self.model, optimizer)
        step_fn = make_train_step(self.model, optimizer, self.loss_fn)
        warmup_steps = int(self.config.warmup_epochs * self.steps_per_epoch)
        phase_step = 0
        for _ in range(epochs):
            started = time.perf_counter()
            loss_sum = correct = 0.0
            for _ in range(self.steps_per_epoch):
                learning_rate = warmup_learning_rate(phase_step, base_lr, hvd.size(), warmup_steps)
                optimizer.learning_rate.assign(learning_rate)
                images, labels = next(self.train_batches)
                loss, n_correct = step_fn(images, labels)
                loss_sum += float(loss)
                correct += float(n_correct)
                phase_step += 1
                self.global_step += 1
            seconds = time.perf_counter() - started
            sums = allreduce_sums({"loss": loss_sum, "correct": correct})
            images_total = self.steps_per_epoch * self.config.batch_size * hvd.size()
            stats = EpochStats(
                loss=sums["loss"] / (self.steps_per_epoch * hvd.size()),
                accuracy=sums["correct"] / images_total,
                images=images_total,
                seconds=seconds,
            )
            validation = self.validate()
            self.epoch += 1
            on_epoch(name, self.epoch, stats, validation, learning_rate)

    def validate(self) -> dict[str, float]:
        """Validation loss/accuracy over all workers (empty dict when there is no split)."""
        if not self.validation_files or self.manifest.split_size("validation") == 0:
            return {}
        batches = make_dataset(
            self.validation_files,
            self.manifest.image_size,
            self.config.batch_size,
            training=False,
            num_shards=hvd.size(),
            shard_index=hvd.rank(),
        )
        return evaluate(self.model, batches, self.loss_fn)

    def probe_batch(self) -> tf.data.Dataset:
        """A fixed batch of real images (validation if any, else training) for checks."""
        split = "validation" if self.manifest.split_size("validation") else "train"
        files = dataset.shard_paths(self.config.data, self.manifest, split)
        images = make_dataset(files, self.manifest.image_size, 16, training=False)
        return images.map(lambda image, _: image).take(1)

    def train(self, on_epoch) -> None:
        """Phase 1 trains the head on a frozen backbone; phase 2 unfreezes the top blocks."""
        self.backbone.trainable = False
        self.run_phase("head", self.config.head_epochs, self.config.learning_rate, on_epoch)
        if self.config.finetune_epochs > 0 and self.config.finetune_blocks > 0:
            set_trainable_top_blocks(
                self.model, BACKBONES[self.config.backbone], self.config.finetune_blocks
            )
            self.run_phase(
                "finetune",
                self.config.finetune_epochs,
                self.config.finetune_learning_rate,
                on_epoch,
            )


def log_epoch(phase: str, epoch: int, stats: EpochStats, validation: dict, lr: float) -> None:
    """Rank 0: print and record one epoch in MLflow."""
    import mlflow

    metrics = {
        "loss": stats.loss,
        "accuracy": stats.accuracy,
        "learning_rate": lr,
        "images_per_second": stats.images_per_second,
    }
    metrics.update({f"val_{key}": value for key, value in validation.items()})
    mlflow.log_metrics(metrics, step=epoch)
    shown = " ".join(f"{key}={value:.4g}" for key, value in metrics.items())
    print(f"epoch {epoch} ({phase}): {shown}", flush=True)


def log_model(trainer: Trainer, config: TrainConfig) -> dict:
    """Rank 0: log the trained model with signature and metadata, and register it."""
    import mlflow
    import mlflow.keras
    from mlflow.models import infer_signature

    size = trainer.manifest.image_size
    probe = next(iter(trainer.probe_batch())).numpy()
    expected = np.asarray(trainer.model.predict_on_batch(probe))
    signature = infer_signature(probe[:1], expected[:1])
    info = mlflow.keras.log_model(
        trainer.model,
        name="model",
        signature=signature,
        pip_requirements=PIP_REQUIREMENTS,
        metadata=model_metadata(
            trainer.manifest.labels,
            size,
            trainer.manifest.resize_mode,
            multi_label=False,
            backbone=config.backbone,
        ),
        registered_model_name=config.registered_model or None,
    )
    # Verify what we ship: the logged model must predict exactly what the trained one does.
    reloaded = mlflow.keras.load_model(info.model_uri)
    difference = float(np.max(np.abs(np.asarray(reloaded.predict_on_batch(probe)) - expected)))
    mlflow.log_metric("logged_model_max_abs_diff", difference)
    if difference > 1e-5:
        raise RuntimeError(f"logged model differs from the trained one by {difference}")
    mlflow.log_dict({"labels": trainer.manifest.labels}, "label_map.json")
    mlflow.log_dict(
        {"image_size": size, "resize_mode": trainer.manifest.resize_mode, "input": "RGB 0..255"},
        "preprocessing.json",
    )
    return {
        "model_uri": info.model_uri,
        "registered_model": config.registered_model,
        "version": str(info.registered_model_version) if info.registered_model_version else None,
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of every Horovod process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="TrainConfig as a JSON file")
    parser.add_argument("--result", help="rank 0 writes run id and model URI here (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    hvd.init()
    configure_devices()
    config = TrainConfig.from_json(Path(args.config).read_text())
    manifest = dataset.read_manifest(config.data)
    keras.utils.set_random_seed(config.seed)
    trainer = Trainer(config, manifest)
    is_chief = hvd.rank() == 0  # Horovod: only rank 0 logs, so one training is one MLflow run

    if not is_chief:
        trainer.train(on_epoch=lambda *_: None)
        return
    import mlflow

    mlflow.set_experiment(config.experiment)
    with mlflow.start_run() as run:
        mlflow.log_params(config.as_params())
        mlflow.set_tags(
            {
                "dataset_hash": manifest.dataset_hash,
                "backbone": config.backbone,
                "world_size": str(hvd.size()),
                "gallerytag.step": "train",
            }
        )
        trainer.train(on_epoch=log_epoch)
        result = {"run_id": run.info.run_id, **log_model(trainer, config)}
    if args.result:
        Path(args.result).write_text(json.dumps(result))
    print(f"training finished: run {result['run_id']}, model {result['model_uri']}", flush=True)


if __name__ == "__main__":
    main()
