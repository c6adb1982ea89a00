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
@click.option("--min-score", default=DEFAULTS.min_score, show_default=True,
              help="Top-1 probability needed for status 'auto'.")  # fmt: skip
@click.option("--min-margin", default=DEFAULTS.min_margin, show_default=True,
              help="Top-1 minus top-2 probability needed for status 'auto'.")  # fmt: skip
@click.option("--shards", default=4, show_default=True, help="Number of tag files.")
@click.option("--tracking-uri", default=None, help="MLflow server (default as for train).")
@click.pass_context
def tag(
    ctx: click.Context,
    source: str,
    model_uri: str,
    out: str,
    min_score: float,
    min_margin: float,
    shards: int,
    tracking_uri: str | None,
) -> None:
    """Tag every image under SOURCE (folder or gs:// prefix) with a model.
    Extra arguments go to Beam, e.g. --runner DataflowRunner."""
    from components.common.tracking import fetch_tagger, tracking
    from components.tag.pipeline import run

    policy = TagPolicy(min_score=min_score, min_margin=min_margin, top_k=DEFAULTS.top_k)
    with tempfile.TemporaryDirectory(prefix="gallerytag-model-") as tmp:
        with tracking(tracking_uri):
            tagger = fetch_tagger(model_uri, tmp)
        summary = run(source, out, tagger, policy, shards, beam_args=list(ctx.args))
    click.echo(
        f"tag: seen {summary.seen} = auto {summary.auto} + review {summary.review} + "
        f"rejected {summary.rejected} ({summary.images_per_second:.1f} images/s)"
    )
    click.echo(f"tags in {summary.out}/tags-*.jsonl, review queue {summary.out}/review.jsonl")
