"""`gallerytag evaluate` and `gallerytag promote`: command-line adapters of evaluation and the
promotion gate."""

from __future__ import annotations

import dataclasses

import click

from components.evaluate.gate import GateConfig
from components.evaluate.run import EvaluateConfig
from components.evaluate.suspects import SuspectConfig

EVAL = EvaluateConfig()
GATE = GateConfig()
SUSPECTS = SuspectConfig()


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
@click.option("--split", default=EVAL.split, show_default=True)
@click.option("--k", default=EVAL.k, show_default=True, type=click.IntRange(min=1),
              help="Top-k accuracy to report (k >= 1).")  # fmt: skip
@click.option(
    "--target-precision",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=EVAL.target_precision,
    show_default=True,
    help="Precision promised for auto tags: policy.json holds the lowest top-1 bar per label "
    "(else global) reaching it on the test split; `gallerytag tag` uses it by default.",
)
@click.option(
    "--suspect-confidence",
    default=SUSPECTS.min_confidence,
    show_default=True,
    help="Flag a training image when the model contradicts its label this surely.",
)
@click.option("--gradcam-per-class", default=EVAL.gradcam_per_class, show_default=True)
@click.option("--tracking-uri", default=None, help="MLflow server (default as for train).")
def evaluate(
    model_uri: str,
    data: str,
    out: str,
    split: str,
    k: int,
    target_precision: float,
    suspect_confidence: float,
    gradcam_per_class: int,
    tracking_uri: str | None,
) -> None:
    """Score a model on a dataset split; write a report and log it to the model's run."""
    from components.common.tracking import tracking
    from components.evaluate.run import evaluate as run_evaluation

    config = dataclasses.replace(
        EVAL,
        split=split,
        k=k,
        target_precision=target_precision,
        gradcam_per_class=gradcam_per_class,
        suspects=dataclasses.replace(SUSPECTS, min_confidence=suspect_confidence),
    )
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


@click.command()
@click.option("--model", "model_uri", required=True, help="Candidate: models:/NAME/VERSION.")
@click.option("--data", required=True, help="Dataset whose test split both models are scored on.")
@click.option("--alias", default="champion", show_default=True)
@click.option(
    "--min-improvement",
    default=GATE.min_improvement,
    show_default=True,
    help="Top-1 gain over the champion needed (a tie never promotes).",
)
@click.option(
    "--max-p-value",
    default=GATE.max_p_value,
    show_default=True,
    help="McNemar test on the same images; 1.0 turns it off.",
)
@click.option(
    "--max-recall-drop",
    default=GATE.max_recall_drop,
    show_default=True,
    help="Largest allowed drop of any class's recall.",
)
@click.option(
    "--floor",
    "absolute_floor",
    default=GATE.absolute_floor,
    show_default=True,
    help="Top-1 the first model needs when there is no champion yet.",
)
@click.option("--decision-out", default=None, help="Write the decision JSON here.")
@click.option("--tracking-uri", default=None, help="MLflow server (default as for train).")
def promote(
    model_uri: str,
    data: str,
    alias: str,
    min_improvement: float,
    max_p_value: float,
    max_recall_drop: float,
    absolute_floor: float,
    decision_out: str | None,
    tracking_uri: str | None,
) -> None:
    """Move the registry alias to the candidate only if it beats the current champion."""
    from components.common.tracking import tracking
    from components.evaluate.promote import promote as run_gate

    config = GateConfig(
        min_improvement=min_improvement,
        max_p_value=max_p_value,
        max_recall_drop=max_recall_drop,
        absolute_floor=absolute_floor,
    )
    with tracking(tracking_uri):
        decision = run_gate(model_uri, data, alias, config, decision_out)
    verdict = f"promoted to @{alias}" if decision.promote else "not promoted"
    click.echo(f"{model_uri}: {verdict}")
    for reason in decision.reasons:
        click.echo(f"  - {reason}")
