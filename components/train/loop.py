"""The data-parallel training step and epoch loop, on `horovod.tensorflow` directly.

Keras 3 trap (see docs/architecture.md): horovod.tensorflow.keras.DistributedOptimizer with
model.fit trains without error but does NOT average gradients, so we own the step. Every
distribution concern is marked `# Horovod:`; ignore those lines to read the one-process path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import horovod.tensorflow as hvd
import keras
import tensorflow as tf


def warmup_learning_rate(step: int, base_lr: float, workers: int, warmup_steps: int) -> float:
    """Learning rate at `step`: linear ramp from base_lr to base_lr * workers, then constant."""
    # Horovod: the effective batch is `workers` times larger, so the LR is scaled by workers
    # (Goyal et al. 2017); ramping up over the first steps avoids diverging at the start.
    target = base_lr * workers
    if warmup_steps <= 0 or step >= warmup_steps:
        return target
    return base_lr + (target - base_lr) * step / warmup_steps


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: Callable,
    average_gradients: bool = True,
    fp16_allreduce: bool = False,
) -> Callable:
    """A compiled step: forward, (averaged) gradients, update; returns (loss, n_correct)."""
    # Horovod: fp16 halves the bytes on the wire; worth it when the network is the bottleneck.
    compression = hvd.Compression.fp16 if fp16_allreduce else hvd.Compression.none

    @tf.function
    def train_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            loss = loss_fn(labels, probabilities)
        if average_gradients:
            # Horovod: allreduce-average gradients so all workers apply the same update.
            tape = hvd.DistributedGradientTape(tape, compression=compression)
        # Horovod: the tape needs the backing tf.Variables; Keras 3 variables fail there.
        gradients = tape.gradient(loss, [v.value for v in model.trainable_variables])
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
        return loss, tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))

    return train_step


def broadcast_state(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Start every worker from rank 0's weights and optimizer state."""
    optimizer.build(model.trainable_variables)
    # Horovod: random init and optimizer slots differ per process until rank 0's are copied.
    hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
    hvd.broadcast_variables([v.value for v in optimizer.variables], root_rank=0)


def allreduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum scalar statistics over all workers (all ranks must call it together)."""
    names = sorted(values)
    # Horovod: one allreduce for all numbers keeps every rank in the same collective order.
    stacked = tf.constant([float(values[name]) for name in names], dtype=tf.float64)
    summed = hvd.allreduce(stacked, op=hvd.Sum, name="metric_sums").numpy()
    return dict(zip(names, summed.tolist(), strict=True))


@dataclass
class EpochStats:
    """Statistics of one epoch, already combined over all workers."""

    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        """Global training throughput."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def evaluate(model: keras.Model, batches: tf.data.Dataset, loss_fn: Callable) -> dict[str, float]:
    """Loss, accuracy and top-3 accuracy over every worker's share of an evaluation set."""
    totals = {"loss_sum": 0.0, "correct": 0.0, "correct_top3": 0.0, "count": 0.0}
    for images, labels in batches:
        probabilities = model(images, training=False)
        count = float(tf.shape(labels)[0])
        totals["loss_sum"] += float(loss_fn(labels, probabilities)) * count
        predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
        totals["correct"] += float(tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32)))
        k = min(3, int(probabilities.shape[-1]))
        in_top3 = tf.math.in_top_k(tf.cast(labels, tf.int32), probabilities, k)
        totals["correct_top3"] += float(tf.reduce_sum(tf.cast(in_top3, tf.float32)))
        totals["count"] += count
    totals = allreduce_sums(totals)
    count = max(totals["count"], 1.0)
    return {
        "loss": totals["loss_sum"] / count,
        "accuracy": totals["correct"] / count,
        "top3_accuracy": totals["correct_top3"] / count,
    }


def smoothed_loss(n_classes: int, smoothing: float):
    """Cross-entropy on integer labels with label smoothing (softmax outputs)."""
    categorical = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)

    def loss(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        return categorical(tf.one_hot(labels, n_classes), probabilities)

    return loss


def epoch_metrics(stats: EpochStats, validation: dict, lr: float) -> dict[str, float]:
    """What one epoch logs: training figures, validation figures, learning rate."""
    metrics = {
        "loss": stats.loss,
        "accuracy": stats.accuracy,
        # Horovod: the rate the optimiser used (per-worker rate x workers, warmed up).
        "learning_rate_effective": lr,
        "images_per_second": stats.images_per_second,
    }
    metrics.update({f"val_{key}": value for key, value in validation.items()})
    return metrics
