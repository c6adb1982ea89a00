"""`gallerytag evaluate` and `gallerytag promote`: command-line adapters of evaluation and the
promotion gate."""

from __future__ import annotations

import click

from components.common.settings import click_options, config_from_options
from components.evaluate.config import EvaluateConfig, GateConfig, SuspectConfig


@click.command()
@click.option(
    "--model",
    "model_uri",
    required=True,
    help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a model dir.",
)
@click.option("--data", required=True, help="Dataset directory written by `gallerytag ingest`.")
@click.option(
    "--out",
    default="evaluation",
    show_default=True,
    help="Folder (local or gs://) for evaluation.json, suspects.jsonl, report.html.",
)
@click_options(EvaluateConfig)
@click_options(SuspectConfig)
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow server (default: a local one under $GALLERYTAG_HOME).")  # fmt: skip
def evaluate(
    model_uri: str, data: str, out: str, tracking_uri: str | None, **options: object
) -> None:
    """Score a model on a dataset split; write a report and log it to the model's run."""
    from components.common.tracking import tracking
    from components.evaluate.run import evaluate as run_evaluation

    suspects = config_from_options(SuspectConfig, options)
    config = config_from_options(EvaluateConfig, options, EvaluateConfig(suspects=suspects))
    split, k = config.split, config.k
    with tracking(tracking_uri):
        result = run_evaluation(model_uri, data, out, config)
    click.echo(
        f"{split} top-1 {result.top1:.4f}, top-{k} {result.topk:.4f} on {result.images} images; "
        f"report: {result.report}"
    )
    if result.probe_top1 is None:
        click.echo(f"linear probe: not measured ({result.probe_note})")
    else:
        gain = result.top1 - result.probe_top1
        verdict = "beats" if gain > 0 else "does NOT beat"
        click.echo(
            f"fine-tuned {result.top1:.4f} vs linear probe {result.probe_top1:.4f} "
            f"({gain:+.4f}): the model {verdict} its frozen backbone"
        )
    if result.reduced:
        click.echo(precision_line(result.reduced, split, k))


def precision_line(cost: dict, split: str, k: int) -> str:
    """The reduced-precision figures in one line, saying when the CPU kept f32."""
    name = cost["precision"] if not cost["fell_back"] else f"{cost['precision']} (ran f32)"
    return (
        f"{split} in {name}: top-1 {cost['top1']['value']:.4f} ({cost['top1_difference']:+.4f} "
        f"vs f32), top-{k} {cost[f'top{k}']['value']:.4f} ({cost[f'top{k}_difference']:+.4f}), "
        f"top-1 agreement {cost['top1_agreement']:.4f}, max |dp| {cost['max_abs_dp']:.2g}; "
        f"{cost['note']}"
    )


@click.command()
@click.option("--model", "model_uri", required=True, help="Candidate: models:/NAME/VERSION.")
@click.option("--data", required=True, help="Dataset whose test split both models are scored on.")
@click_options(GateConfig)
@click.option("--decision-out", default=None, help="Write the decision JSON here.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow server (default: a local one under $GALLERYTAG_HOME).")  # fmt: skip
def promote(
    model_uri: str,
    data: str,
    decision_out: str | None,
    tracking_uri: str | None,
    **options: object,
) -> None:
    """Move the registry alias to the candidate only if it beats the current champion."""
    from components.common.tracking import tracking
    from components.evaluate.promote import promote as run_gate

    config = config_from_options(GateConfig, options)
    alias = config.alias
    with tracking(tracking_uri):
        decision = run_gate(model_uri, data, config=config, decision_path=decision_out)
    verdict = f"promoted to @{alias}" if decision.promote else "not promoted"
    click.echo(f"{model_uri}: {verdict}")
    for reason in decision.reasons:
        click.echo(f"  - {reason}")
