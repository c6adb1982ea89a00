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
from dataclasses import dataclass
from pathlib import Path

import horovod.tensorflow as hvd
import keras
import numpy as np
import tensorflow as tf

from components.common import dataset, progress, storage
from components.common.probe import LinearProbe, fit_probe, split_features
from components.common.tfdata import make_dataset
from components.train import checkpoint, chief, wise
from components.train.checkpoint import TrainingState
from components.train.config import TrainConfig
from components.train.loop import (
    EpochStats,
    allreduce_sums,
    broadcast_state,
    epoch_metrics,
    evaluate,
    make_train_step,
    smoothed_loss,
    warmup_learning_rate,
)
from components.train.recipe import auto_epochs, over_budget
from components.train.schedule import (
    Action,
    ConstantSchedule,
    CosineSchedule,
    EarlyStopping,
    PlateauSchedule,
)
from models.head import build_classifier, set_trainable_top_blocks
from models.registry import BACKBONES, build_backbone

log = logging.getLogger("gallerytag.train")


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


@dataclass(frozen=True)
class Phase:
    """One stretch of training with its own trainable set and learning rate."""

    name: str
    epochs: int
    learning_rate: float


SCHEDULES = {"plateau": PlateauSchedule, "cosine": CosineSchedule, "constant": ConstantSchedule}


def make_schedule(config: TrainConfig, phase: Phase, saved: dict | None):
    """The configured LR schedule for a phase, continued from a checkpoint when given."""
    kind = SCHEDULES[config.schedule]
    if saved:
        return kind(**saved)
    if kind is CosineSchedule:
        return CosineSchedule(phase.learning_rate, phase.epochs)
    if kind is PlateauSchedule:
        return PlateauSchedule(phase.learning_rate, max_decays=config.max_decays)
    return ConstantSchedule(phase.learning_rate)


class Trainer:
    """Owns the model, data, schedule and checkpoints across the two fine-tuning phases."""

    def __init__(self, config: TrainConfig, manifest: dataset.Manifest) -> None:
        self.config = config
        self.manifest = manifest
        self.loss_fn = smoothed_loss(len(manifest.labels), config.label_smoothing)
        # Validation (model selection, schedules) is judged on the plain, unsmoothed loss.
        self.validation_loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.state = TrainingState()
        self.checkpoint_dir = config.checkpoint_dir
        self.optimizer: keras.optimizers.Optimizer | None = None  # the current phase's
        self.best_weights: list[np.ndarray] | None = None
        self.best_loss = float("inf")
        self.start_weights: list[np.ndarray] | None = None  # fine-tuning's start (WiSE-FT)
        self.wise_validation: dict[str, float] | None = None  # after the interpolation
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
                cache=config.cache,
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
        finetune_epochs = config.finetune_epochs or auto_epochs(
            manifest.split_size("train"), global_batch
        )
        self.phases = [
            Phase("head", config.head_epochs, config.learning_rate),
            Phase("finetune", finetune_epochs, config.finetune_learning_rate),
        ]
        self.started = time.perf_counter()
        self.out_of_time = False
        # Horovod: rank 0 reports the progress of all ranks (they take the same steps).
        self.progress = progress.Reporter("train", "images") if hvd.rank() == 0 else None

    def _report_progress(self) -> None:
        """Images trained so far of those planned, and the epoch, to the progress display."""
        global_batch = self.config.batch_size * hvd.size()
        planned = sum(phase.epochs for phase in self.phases)
        epoch = min(self.state.epochs_done + 1, planned)
        self.progress.update(
            self.state.global_step * global_batch,
            planned * self.steps_per_epoch * global_batch,
            f"epoch {epoch}/{planned}",
        )

    def init_head_from_probe(self) -> LinearProbe:
        """LP-FT: fit the linear probe on the frozen backbone's features of the training
        images (C chosen on validation) and start the head from it."""
        train = self._all_features("train")
        validation = self._all_features("validation")
        probe = fit_probe(*train, len(self.manifest.labels), *validation)
        self.model.get_layer("tags").set_weights([probe.kernel, probe.bias])
        return probe

    def _all_features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        files = dataset.shard_paths(self.config.data, self.manifest, split)
        if not files or self.manifest.split_size(split) == 0:
            return np.zeros((0, 1)), np.zeros(0, np.int64)
        # Horovod: each rank embeds its 1/size of the images; allgather hands every rank
        # all of them in rank order, so every rank fits the very same probe.
        features, labels = split_features(
            self.backbone, files, self.manifest.image_size, self.config.batch_size,
            num_shards=hvd.size(), shard_index=hvd.rank(),
        )  # fmt: skip
        gathered = hvd.allgather(tf.constant(features, tf.float32), name=f"features_{split}")
        all_labels = hvd.allgather(tf.constant(labels, tf.int64), name=f"labels_{split}")
        return gathered.numpy(), all_labels.numpy()

    def resume(self) -> bool:
        """Continue from the checkpoint folder if it holds a checkpoint; True when resumed."""
        folder = self.checkpoint_dir
        saved = checkpoint.load(folder) if folder else None
        if saved is None:
            return False
        self.state = saved
        # Every rank reads the (shared) checkpoint; the broadcast at the start of the phase
        # makes the weights identical anyway.
        self.model.set_weights(checkpoint.load_weights(folder))
        if saved.has_best:
            self.best_weights = checkpoint.load_weights(folder, best=True)
            self.best_loss = saved.best_loss
        self.start_weights = checkpoint.load_start_weights(folder)
        return True

    def _set_trainable(self, phase: Phase) -> None:
        if phase.name == "head":
            self.backbone.trainable = False
        else:
            set_trainable_top_blocks(
                self.model, BACKBONES[self.config.backbone], self.config.finetune_blocks
            )

    def _phase_done(self, index: int, phase: Phase) -> bool:
        """Whether a (resumed) training already finished this phase."""
        current = [p.name for p in self.phases].index(self.state.phase)
        if index < current:
            return True
        if index > current:
            return False
        return self.state.phase_finished or self.state.phase_epochs_done >= phase.epochs

    def run_phase(self, phase: Phase, on_epoch, save) -> None:
        """Train one phase from its first (or resumed) epoch until done or stopped."""
        resuming = self.state.phase == phase.name and self.state.phase_epochs_done > 0
        if not resuming:
            self.state.phase, self.state.phase_epochs_done = phase.name, 0
            self.state.phase_finished, self.state.schedule = False, {}
        self._set_trainable(phase)
        schedule = make_schedule(self.config, phase, self.state.schedule or None)
        optimizer = keras.optimizers.Adam(learning_rate=phase.learning_rate)
        optimizer.build(self.model.trainable_variables)
        if resuming:
            checkpoint.restore_optimizer(self.checkpoint_dir, optimizer)
        self.optimizer = optimizer
        broadcast_state(self.model, optimizer)
        step_fn = make_train_step(
            self.model, optimizer, self.loss_fn, fp16_allreduce=self.config.fp16_allreduce
        )
        warmup_steps = int(self.config.warmup_epochs * self.steps_per_epoch)
        stopper = EarlyStopping(self.config.early_stopping_patience)
        for epoch in range(self.state.phase_epochs_done, phase.epochs):
            stats, learning_rate = self._train_epoch(
                step_fn, optimizer, schedule.current_rate(epoch), epoch, warmup_steps
            )
            validation = self.validate()
            action = Action.CONTINUE
            if validation:
                action = schedule.after_epoch(epoch, validation["loss"])
                if validation["loss"] < self.best_loss:
                    self.best_loss, self.best_weights = validation["loss"], self.model.get_weights()
                if self.config.early_stopping_patience > 0 and action is Action.CONTINUE:
                    action = stopper.after_epoch(epoch, validation["loss"])
                if action is not Action.CONTINUE and self.best_weights is not None:
                    # The paper's rule: go back to the best weights before going on or stopping.
                    self.model.set_weights(self.best_weights)
            if action is Action.CONTINUE and self._out_of_time(stats.seconds):
                action = Action.STOP
                self.out_of_time = True
            self.state.phase_epochs_done = epoch + 1
            self.state.epochs_done += 1
            self.state.schedule = schedule.state()
            self.state.phase_finished = action is Action.STOP
            self.state.has_best = self.best_weights is not None
            self.state.best_loss = self.best_loss if self.state.has_best else None
            # Checkpoint first, then log: a kill between the two re-runs the epoch, and the
            # rerun logs it once (logging first logged a resumed epoch twice).
            self.state.last_epoch_metrics = epoch_metrics(stats, validation, learning_rate)
            save(self)
            on_epoch(phase.name, self.state.epochs_done, self.state.last_epoch_metrics)
            if action is Action.STOP:
                break
        if self.best_weights is not None and self._keeps_best():
            self.model.set_weights(self.best_weights)

    def _keeps_best(self) -> bool:
        """Cosine ends on its own schedule's final weights: on a few dozen validation images
        the best-loss epoch is mostly noise (measured in docs/benchmarks.md, issue 14), so
        only plateau, constant and early stopping go back to the best epoch."""
        return self.config.schedule != "cosine" or self.config.early_stopping_patience > 0

    def _out_of_time(self, epoch_seconds: float) -> bool:
        """Whether one more epoch would end past the time budget (the same on every rank)."""
        if self.config.time_budget_minutes <= 0:
            return False
        # Horovod: decide on rank-averaged clocks, so every rank stops at the same epoch.
        sums = allreduce_sums(
            {"elapsed": time.perf_counter() - self.started, "epoch": epoch_seconds}
        )
        size = hvd.size()
        return over_budget(
            sums["elapsed"] / size, sums["epoch"] / size, self.config.time_budget_minutes
        )

    def _train_epoch(self, step_fn, optimizer, epoch_rate: float, epoch: int, warmup_steps: int):
        started = time.perf_counter()
        loss_sum = correct = 0.0
        learning_rate = epoch_rate
        for step in range(self.steps_per_epoch):
            phase_step = epoch * self.steps_per_epoch + step
            # Horovod: LR x workers, ramped up over the first steps of the phase.
            learning_rate = warmup_learning_rate(phase_step, epoch_rate, hvd.size(), warmup_steps)
            optimizer.learning_rate.assign(learning_rate)
            images, labels = next(self.train_batches)
            loss, n_correct = step_fn(images, labels)
            loss_sum += float(loss)
            correct += float(n_correct)
            self.state.global_step += 1
            if self.progress is not None:
                self._report_progress()
        seconds = time.perf_counter() - started
        self._record_rank_stats(loss_sum / self.steps_per_epoch, seconds)
        # Horovod: average the statistics over workers so rank 0 logs the global figures.
        sums = allreduce_sums({"loss": loss_sum, "correct": correct})
        images_total = self.steps_per_epoch * self.config.batch_size * hvd.size()
        stats = EpochStats(
            loss=sums["loss"] / (self.steps_per_epoch * hvd.size()),
            accuracy=sums["correct"] / images_total,
            images=images_total,
            seconds=seconds,
        )
        return stats, learning_rate

    def _record_rank_stats(self, loss: float, seconds: float) -> None:
        """This rank's own figures, before averaging (to find slow or diverging workers)."""
        if not self.config.rank_stats_dir:
            return
        folder = Path(self.config.rank_stats_dir)
        folder.mkdir(parents=True, exist_ok=True)
        row = {"epoch": self.state.epochs_done + 1, "loss": loss, "seconds": seconds}
        with (folder / f"rank{hvd.rank()}.jsonl").open("a") as stream:
            stream.write(json.dumps(row) + "\n")

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
        return evaluate(self.model, batches, self.validation_loss_fn)

    def probe_batch(self) -> tf.data.Dataset:
        """A fixed batch of real images (validation if any, else training) for checks."""
        split = "validation" if self.manifest.split_size("validation") else "train"
        files = dataset.shard_paths(self.config.data, self.manifest, split)
        images = make_dataset(files, self.manifest.image_size, 16, training=False)
        return images.map(lambda image, _: image).take(1)

    def train(self, on_epoch, save) -> None:
        """Phase 1 trains the head on a frozen backbone; phase 2 unfreezes the top blocks."""
        for index, phase in enumerate(self.phases):
            if phase.epochs <= 0 or self._phase_done(index, phase) or self.out_of_time:
                continue
            if phase.name == "finetune" and self.config.finetune_blocks <= 0:
                continue
            if phase.name == "finetune" and self.start_weights is None:
                self.start_weights = self.model.get_weights()
            self.run_phase(phase, on_epoch, save)
        if self.start_weights is not None and self.config.wise_alpha < 1.0:
            # Every rank holds the same weights, so every rank ends at the same interpolation.
            final = self.model.get_weights()
            alpha = self.config.wise_alpha
            self.model.set_weights(wise.interpolate(self.start_weights, final, alpha))
            self.wise_validation = self.validate()


def main(argv: list[str] | None = None) -> None:
    """Entry point of every Horovod process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="TrainConfig as a JSON file")
    parser.add_argument("--result", help="rank 0 writes run id and model URI here (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    hvd.init()
    configure_devices()
    config = TrainConfig.from_json(storage.read_text(args.config))
    manifest = dataset.read_manifest(config.data)
    keras.utils.set_random_seed(config.seed)
    trainer = Trainer(config, manifest)
    resumed = trainer.resume()
    # A resumed training's head is in its checkpoint; a new one starts from the probe.
    probe = trainer.init_head_from_probe() if config.head_init == "probe" and not resumed else None
    is_chief = hvd.rank() == 0  # Horovod: only rank 0 logs, so one training is one MLflow run

    if not is_chief:
        trainer.train(on_epoch=lambda *_: None, save=lambda _: None)
        return
    chief.train_and_log(trainer, config, manifest, probe, resumed, args.result)


if __name__ == "__main__":
    main()
