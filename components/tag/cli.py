"""`gallerytag tag`: the command-line adapter of bulk tagging."""

from __future__ import annotations

import tempfile

import click

from components.tag.policy import TagPolicy

DEFAULTS = TagPolicy()


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("source")
@click.option("--model", "model_uri", required=True, help="models:/NAME@ALIAS, models:/NAME/N...")
@click.option("--out", required=True, help="Where tags go (local path or gs://).")
@click.option("--min-score", type=float, default=None,
              help="Set the auto bar by hand: top-1 probability needed for 'auto' "
              f"(default with --min-margin only: {DEFAULTS.min_score}).")  # fmt: skip
@click.option("--min-margin", type=float, default=None,
              help="Set the auto bar by hand: top-1 minus top-2 probability needed for "
              f"'auto' (default with --min-score only: {DEFAULTS.min_margin}).")  # fmt: skip
@click.option("--label-threshold", "label_thresholds", multiple=True, metavar="LABEL=P",
              help="Multi-label models: one label's cut-off (others: --min-score).")  # fmt: skip
@click.option("--thresholds-from", default="model", show_default=True,
              help="Where the auto/review policy comes from when no threshold is set by "
              "hand: 'model' (policy.json of the evaluation logged on the model's MLflow "
              "run) or an evaluation folder / policy.json. A model never evaluated sends "
              "every image to review.")  # fmt: skip
@click.option("--shards", default=4, show_default=True, help="Number of tag files.")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "parquet"]),
              default="jsonl", show_default=True, help="Format of the tag files.")  # fmt: skip
@click.option("--incremental", is_flag=True,
              help="Keep the rows of images already tagged by this model version (same "
              "content hash) from the previous run in --out; only new or changed images "
              "are decoded and predicted.")  # fmt: skip
@click.option("--write-metadata", is_flag=True,
              help="Also merge the tag into each gs:// object's custom metadata "
              "(gallerytag-* keys; other keys are kept).")  # fmt: skip
@click.option("--copy-to", default=None,
              help="Also copy each image into DIR/<label>/ "
              "(uncertain ones: DIR/_review/<label>/).")  # fmt: skip
@click.option("--tracking-uri", default=None, help="MLflow server (default as for train).")
@click.pass_context
def tag(
    ctx: click.Context,
    source: str,
    model_uri: str,
    out: str,
    min_score: float | None,
    min_margin: float | None,
    label_thresholds: tuple[str, ...],
    thresholds_from: str,
    shards: int,
    output_format: str,
    incremental: bool,
    write_metadata: bool,
    copy_to: str | None,
    tracking_uri: str | None,
) -> None:
    """Tag every image under SOURCE (folder or gs:// prefix) with a model.
    Extra arguments go to Beam, e.g. --runner DataflowRunner."""
    from components.common.tracking import fetch_tagger, tracking
    from components.tag.pipeline import TagOutputs, run
    from components.tag.policy_source import choose_policy, describe, manual_policy

    cutoffs = {}
    for pair in label_thresholds:
        label, sep, value = pair.rpartition("=")
        if not sep or not label:
            raise click.BadParameter(f"'{pair}' is not LABEL=P", param_hint="--label-threshold")
        cutoffs[label] = float(value)
    manual = manual_policy(min_score, min_margin, cutoffs)
    outputs = TagOutputs(output_format, shards, incremental, write_metadata, copy_to)
    with tempfile.TemporaryDirectory(prefix="gallerytag-model-") as tmp:
        with tracking(tracking_uri):
            tagger = fetch_tagger(model_uri, tmp)
            policy = choose_policy(tagger, manual, thresholds_from, tmp)
        click.echo(describe(policy))
        summary = run(source, out, tagger, policy, outputs, beam_args=list(ctx.args))
    click.echo(
        f"tag: seen {summary.seen} = auto {summary.auto} + review {summary.review} + "
        f"rejected {summary.rejected} ({summary.images_per_second:.1f} images/s)"
    )
    if summary.carried:
        click.echo(f"  {summary.carried} unchanged images kept their previous tags")
    click.echo(
        f"tags in {summary.out}/tags-*.{output_format}, review queue {summary.out}/review.jsonl"
    )
