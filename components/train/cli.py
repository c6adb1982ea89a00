"""`gallerytag train`: the command-line adapter of Horovod training."""

from __future__ import annotations

import click

from components.common.settings import click_options, config_from_options
from components.train.config import TrainConfig


@click.command()
@click.option("--data", required=True, help="Dataset directory written by `gallerytag ingest`.")
@click_options(TrainConfig)
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow server (default: a local one under $GALLERYTAG_HOME).")  # fmt: skip
def train(data: str, tracking_uri: str | None, **options: object) -> None:
    """Fine-tune a tagger on an ingested dataset with Horovod; log one MLflow run."""
    from components.train.launcher import train as run_training

    config = config_from_options(TrainConfig, options, TrainConfig(data=data))
    result = run_training(config, tracking_uri)
    click.echo(f"run id: {result.run_id}")
    click.echo(f"model: {result.model_uri}")
    if result.version:
        click.echo(f"registered: models:/{result.registered_model}/{result.version}")
