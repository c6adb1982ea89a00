"""`gallerytag evaluate`: the command-line adapter of model evaluation."""

from __future__ import annotations

import click


@click.command()
@click.option("--model", "model_uri", required=True, help="models:/NAME@ALIAS, models:/NAME/N...")
@click.option("--data", required=True, help="Dataset directory written by `gallerytag ingest`.")
@click.option("--split", default="test", show_default=True)
@click.option("--tracking-uri", default=None, help="MLflow server (default as for train).")
def evaluate(model_uri: str, data: str, split: str, tracking_uri: str | None) -> None:
    """Score a model on a dataset split and record the figures on its MLflow run."""
    from components.common.tracking import tracking
    from components.evaluate.run import evaluate as run_evaluation

    with tracking(tracking_uri):
        result = run_evaluation(model_uri, data, split)
    click.echo(
        f"{split} top-1 {result.top1:.4f}, top-3 {result.top3:.4f} on {result.images} images"
    )
