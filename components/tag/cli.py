"""`gallerytag tag`: the command-line adapter of bulk tagging."""

from __future__ import annotations

import json
import tempfile

import click

from components.common.beam_cli import BeamCommand, beam_args
from components.common.settings import click_options, config_from_options
from components.tag.config import TagConfig, TagOutputs


@click.command(cls=BeamCommand)
@click.argument("source")
@click.option("--model", "model_uri", required=True, help="models:/NAME@ALIAS, models:/NAME/N...")
@click.option("--out", required=True, help="Where tags go (local path or gs://).")
@click_options(TagConfig)
@click_options(TagOutputs)
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow server (default: a local one under $GALLERYTAG_HOME).")  # fmt: skip
@click.pass_context
def tag(
    ctx: click.Context,
    source: str,
    model_uri: str,
    out: str,
    tracking_uri: str | None,
    **options: object,
) -> None:
    """Tag every image under SOURCE (folder or gs:// prefix) with a model.

    Beam's pipeline options (e.g. --runner DataflowRunner) are passed to Beam, as is
    everything after `--`."""
    from components.common import runners
    from components.tag.pipeline import run

    config = config_from_options(TagConfig, options)
    outputs = config_from_options(TagOutputs, options)
    runners.runner_name(beam_args(ctx))  # a refused --runner fails before the model download
    with tempfile.TemporaryDirectory(prefix="gallerytag-model-") as tmp:
        tagger, policy = tagger_and_policy(model_uri, config, tracking_uri, tmp)
        runtime = chosen_runtime(tagger, config, tmp)
        summary = run(source, out, tagger, policy, outputs, beam_args=beam_args(ctx),
                      runtime=runtime)  # fmt: skip
    click.echo(
        f"tag: seen {summary.seen} = auto {summary.auto} + review {summary.review} + "
        f"rejected {summary.rejected} ({summary.images_per_second:.1f} images/s)"
    )
    if summary.carried:
        click.echo(f"  {summary.carried} unchanged images kept their previous tags")
    from components.common import storage
    from components.common.tag_rows import SUCCESS_NAME

    files = json.loads(storage.read_text(storage.join(summary.out, SUCCESS_NAME)))["files"]
    click.echo(f"tags in {summary.out}/{files['tags']}, review {summary.out}/{files['review']}")


def tagger_and_policy(
    model_uri: str, config: TagConfig, tracking_uri: str | None, tmp: str
) -> tuple:
    """Resolve the model once and choose its policy (printed, so the user sees the bars)."""
    import dataclasses

    from components.common.tracking import fetch_tagger, tracking
    from components.tag.policy_source import choose_policy, describe, manual_policy

    manual = manual_policy(config.min_score, config.min_margin, config.label_thresholds)
    with tracking(tracking_uri):
        tagger = fetch_tagger(model_uri, tmp)
        policy = choose_policy(tagger, manual, config.thresholds_from, tmp)
    policy = dataclasses.replace(policy, top_k=config.top_k)
    click.echo(describe(policy))
    return tagger, policy


def chosen_runtime(tagger, config: TagConfig, tmp: str):
    """The runtime for this job (an IR missing from the version is exported into `tmp`),
    printed, so the user sees which one runs."""
    from components.tag.runtime import choose_runtime

    runtime = choose_runtime(tagger, config.runtime, config.precision, tmp)
    click.echo(f"tag: {runtime.describe()}")
    return runtime
