"""`gallerytag ingest`: the command-line adapter of the ingest pipeline."""

from __future__ import annotations

import click

from components.ingest.core import IngestConfig


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse "70/10/20" or "0.7,0.1,0.2" into train/validation/test fractions."""
    parts = [float(p) for p in text.replace("/", ",").split(",")]
    if len(parts) != 3:
        raise click.BadParameter(f"need three numbers for train/validation/test, got {text!r}")
    total = sum(parts)
    if total <= 0:
        raise click.BadParameter("split ratios must add up to more than 0")
    return tuple(p / total for p in parts)  # type: ignore[return-value]


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("source")
@click.option("--out", required=True, help="Dataset directory to write (local path or gs://).")
@click.option("--image-size", default=224, show_default=True, help="Side of the square images.")
@click.option(
    "--resize-mode",
    type=click.Choice(["pad", "crop"]),
    default="pad",
    show_default=True,
    help="pad: keep the aspect ratio and pad; crop: centre-crop.",
)
@click.option(
    "--split", "split_text", default="70/10/20", show_default=True,
    help="train/validation/test ratios, applied within each label (stratified).",
)  # fmt: skip
@click.option(
    "--split-seed", default=0, show_default=True,
    help="Another seed draws another stratified split of the same images.",
)  # fmt: skip
@click.option("--shards", default=0, show_default=True,
              help="TFRecord shards per split; 0 lets the runner choose (no shuffle of pixels, "
              "memory stays flat).")  # fmt: skip
@click.option("--min-side", default=8, show_default=True, help="Reject images smaller than this.")
@click.option(
    "--max-pixels", default=100_000_000, show_default=True,
    help="Reject images with more pixels (decompression bombs).",
)  # fmt: skip
@click.option(
    "--near-duplicate-distance", default=10, show_default=True,
    help="Max differing bits (of 256) of the perceptual hash for near-duplicates; -1 = off.",
)  # fmt: skip
@click.option(
    "--small-class-policy", type=click.Choice(["warn", "error"]), default="warn",
    show_default=True, help="What to do when a label gets no image in some split.",
)  # fmt: skip
@click.option(
    "--corrections", "corrections", multiple=True,
    help="corrections.jsonl from `gallerytag review` (or `review import`), local or gs://; "
    "repeatable, a later file wins. The reviewer's label wins over the source's, 'none' "
    "excludes the image, images only in corrections are added.",
)  # fmt: skip
@click.pass_context
def ingest(
    ctx: click.Context,
    source: str,
    out: str,
    image_size: int,
    resize_mode: str,
    split_text: str,
    split_seed: int,
    shards: int,
    min_side: int,
    max_pixels: int,
    near_duplicate_distance: int,
    small_class_policy: str,
    corrections: tuple[str, ...],
) -> None:
    """Validate, deduplicate and split SOURCE into TFRecord shards under --out.

    SOURCE is a folder with one sub-folder per label, or a CSV/JSONL manifest of
    uri,label[,split]; local paths or gs://. Extra arguments go to Beam, e.g.
    --runner DataflowRunner --project P --region R --temp_location gs://B/tmp."""
    from components.ingest.pipeline import run

    config = IngestConfig(
        image_size=image_size,
        resize_mode=resize_mode,
        split_ratios=parse_ratios(split_text),
        split_seed=split_seed,
        min_side=min_side,
        max_pixels=max_pixels,
        shards_per_split=shards,
        near_duplicate_distance=near_duplicate_distance,
        small_class_policy=small_class_policy,
    )
    summary = run(source, out, config, beam_args=list(ctx.args), corrections=list(corrections))
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
