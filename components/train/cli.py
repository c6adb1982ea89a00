"""`gallerytag train`: the command-line adapter of Horovod training."""

from __future__ import annotations

import dataclasses

import click

from components.train.config import TrainConfig

DEFAULTS = TrainConfig()


@click.command()
@click.option("--data", required=True, help="Dataset directory written by `gallerytag ingest`.")
@click.option("--workers", default=DEFAULTS.workers, show_default=True, help="Horovod processes.")
@click.option("--backbone", default=DEFAULTS.backbone, show_default=True)
@click.option(
    "--weights", default=DEFAULTS.weights, show_default=True,
    help="imagenet, none, or a local weights file.",
)  # fmt: skip
@click.option("--batch-size", default=DEFAULTS.batch_size, show_default=True, help="Per worker.")
@click.option(
    "--head-init", type=click.Choice(["probe", "random"]), default=DEFAULTS.head_init,
    show_default=True,
    help="probe: start the head from a linear probe on frozen features (LP-FT).",
)  # fmt: skip
@click.option("--head-epochs", default=DEFAULTS.head_epochs, show_default=True,
              help="Head-only epochs on the frozen backbone before fine-tuning.")  # fmt: skip
@click.option("--finetune-epochs", default=DEFAULTS.finetune_epochs, show_default=True,
              help="0 = sized from the dataset (~240 optimiser steps, 4-30 epochs).")  # fmt: skip
@click.option("--finetune-blocks", default=DEFAULTS.finetune_blocks, show_default=True,
              help="Top backbone blocks unfrozen for fine-tuning.")  # fmt: skip
@click.option("--learning-rate", default=DEFAULTS.learning_rate, show_default=True,
              help="Head phase, per worker (x workers).")  # fmt: skip
@click.option(
    "--finetune-learning-rate", default=DEFAULTS.finetune_learning_rate, show_default=True,
    help="Fine-tuning phase, per worker (x workers).",
)  # fmt: skip
@click.option("--label-smoothing", default=DEFAULTS.label_smoothing, show_default=True)
@click.option(
    "--time-budget", "time_budget_minutes", default=DEFAULTS.time_budget_minutes,
    show_default=True,
    help="Minutes; no epoch starts that would end past it (0 = no budget).",
)  # fmt: skip
@click.option(
    "--schedule", type=click.Choice(["plateau", "cosine", "constant"]),
    default=DEFAULTS.schedule, show_default=True,
    help="cosine: decay over the phase; plateau: LR / 10 when validation loss worsens, "
    "stop when that no longer helps.",
)  # fmt: skip
@click.option("--max-decays", default=DEFAULTS.max_decays, show_default=True)
@click.option("--early-stopping-patience", default=DEFAULTS.early_stopping_patience,
              show_default=True, help="0 = off.")  # fmt: skip
@click.option("--warmup-epochs", default=DEFAULTS.warmup_epochs, show_default=True)
@click.option("--checkpoint-dir", default=DEFAULTS.checkpoint_dir,
              help="Local or gs:// folder for per-epoch checkpoints (default: under "
              "$GALLERYTAG_HOME, keyed by config and dataset; reruns resume).")  # fmt: skip
@click.option("--fp16-allreduce/--no-fp16-allreduce", default=DEFAULTS.fp16_allreduce,
              show_default=True, help="Compress gradients to fp16 for the allreduce.")  # fmt: skip
@click.option("--cache/--no-cache", default=DEFAULTS.cache, show_default=True,
              help="Keep decoded training images in memory after the first epoch.")  # fmt: skip
@click.option("--experiment", default=DEFAULTS.experiment, show_default=True)
@click.option(
    "--registered-model", default=DEFAULTS.registered_model, show_default=True,
    help="Model Registry name to register the trained model under.",
)  # fmt: skip
@click.option("--tracking-uri", default=None, help="MLflow server (default: $MLFLOW_TRACKING_URI, "
              "else a local one under $GALLERYTAG_HOME).")  # fmt: skip
def train(tracking_uri: str | None, **options: object) -> None:
    """Fine-tune a tagger on an ingested dataset with Horovod; log one MLflow run."""
    from components.train.launcher import train as run_training

    config = dataclasses.replace(DEFAULTS, **options)
    result = run_training(config, tracking_uri)
    click.echo(f"run id: {result.run_id}")
    click.echo(f"model: {result.model_uri}")
    if result.version:
        click.echo(f"registered: models:/{result.registered_model}/{result.version}")
