"""`gallerytag ingest`: the command-line adapter of the ingest pipeline."""

from __future__ import annotations

import click

from components.common.beam_cli import BeamCommand, beam_args
from components.common.settings import click_options, config_from_options
from components.ingest.core import IngestConfig


@click.command(cls=BeamCommand)
@click.argument("source")
@click.option("--out", required=True, help="Dataset directory to write (local path or gs://).")
@click_options(IngestConfig)
@click.option(
    "--corrections", "corrections", multiple=True,
    help="corrections.jsonl from `gallerytag review` (or `review import`), local or gs://; "
    "repeatable, a later file wins. The reviewer's label wins over the source's, 'none' "
    "excludes the image, images only in corrections are added.",
)  # fmt: skip
@click.pass_context
def ingest(
    ctx: click.Context, source: str, out: str, corrections: tuple[str, ...], **options: object
) -> None:
    """Validate, deduplicate and split SOURCE into TFRecord shards under --out.

    SOURCE is a folder with one sub-folder per label, or a CSV/JSONL manifest of
    uri,label[,split]; local paths or gs://. Beam's pipeline options (e.g. --runner
    DataflowRunner --project P --region R --temp_location gs://B/tmp) are passed to Beam, as is
    everything after `--`."""
    from components.ingest.pipeline import run

    config = config_from_options(IngestConfig, options)
    summary = run(source, out, config, beam_args=beam_args(ctx), corrections=list(corrections))
    click.echo(
        f"ingest: seen {summary.seen} = accepted {summary.accepted} + rejected "
        f"{summary.rejected} + duplicates {summary.duplicates}"
    )
    for split_name, per_label in summary.counts.items():
        click.echo(f"  {split_name:<10} {sum(per_label.values()):>7} images")
    for reason, count in sorted(summary.rejected_reasons.items()):
        click.echo(f"  rejected {reason}: {count}")
    if summary.review:
        review = summary.review
        click.echo(
            f"  from review: {review['from_review']} labelled ({review['changed']} changed, "
            f"{review['added']} added), {review['excluded']} excluded"
        )
    for warning in summary.warnings:
        click.echo(f"  warning: {warning}")
    click.echo(f"dataset {summary.out} (hash {summary.dataset_hash[:12]})")
