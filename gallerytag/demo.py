"""`gallerytag demo`: the whole embedded path on a Fashion-MNIST gallery, on one machine.

Writes labelled JPEGs in class folders (plus a few broken files, to show rejections) and an
unlabelled inbox, then runs the example run file (gallerytag/examples/gallery.yaml) on them:
ingest -> train (Horovod) -> evaluate -> promote -> tag, exactly as `gallerytag run` does.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from gallerytag.gallery import materialise_gallery

EXAMPLE_RUN_FILE = Path(__file__).parent / "examples" / "gallery.yaml"


@click.command()
@click.option("--out", default="demo-output", show_default=True, help="Everything goes here.")
@click.option("--per-class", default=300, show_default=True, help="Labelled images per class.")
@click.option("--inbox", "inbox_size", default=200, show_default=True,
              help="Unlabelled images to tag.")  # fmt: skip
@click.option("--image-size", default=96, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Horovod processes.")
@click.option("--head-epochs", default=0, show_default=True,
              help="Head-only epochs (the head starts from the linear probe).")  # fmt: skip
@click.option("--finetune-epochs", default=0, show_default=True,
              help="0 = sized from the dataset.")  # fmt: skip
def demo(
    out: str,
    per_class: int,
    inbox_size: int,
    image_size: int,
    workers: int,
    head_epochs: int,
    finetune_epochs: int,
) -> None:
    """Run ingest -> train -> evaluate -> promote -> tag on a Fashion-MNIST gallery (no cluster)."""
    from components.common.tracking import LocalStore, gallerytag_home
    from gallerytag.run import run_all
    from gallerytag.runfile import load

    root = Path(out).resolve()
    os.environ.setdefault("GALLERYTAG_HOME", str(root / "mlflow"))
    if not (root / "gallery").is_dir():
        click.echo(f"writing the demo gallery ({per_class} images x 10 classes) to {root}")
        materialise_gallery(root, per_class, inbox_size)
    config = load(
        str(EXAMPLE_RUN_FILE),
        {
            "source": str(root / "gallery"),
            "tag_source": str(root / "inbox"),
            "work_dir": str(root),
            "image_size": image_size,
            "workers": workers,
            "head_epochs": head_epochs,
            "finetune_epochs": finetune_epochs,
            "experiment": "gallerytag-demo",
            "registered_model": "fashion-demo",
        },
    )
    click.echo(f"running {EXAMPLE_RUN_FILE} with the demo's source, work_dir and tag_source")
    results = run_all(config)

    evaluation, tagged = results["evaluate"], results.get("tag")
    click.echo("")
    click.echo(f"test top-1 accuracy: {evaluation['top1']:.3f}")
    if evaluation["probe_top1"] is not None:
        click.echo(
            f"  linear probe on the frozen backbone: {evaluation['probe_top1']:.3f} "
            f"(fine-tuning adds {evaluation['top1'] - evaluation['probe_top1']:+.3f})"
        )
    click.echo(f"evaluation report: {evaluation['report']}")
    click.echo(f"MLflow run id: {results['train']['run_id']} (experiment gallerytag-demo)")
    click.echo(f"  browse it:  {LocalStore(gallerytag_home()).ui_command()}")
    if tagged is None:
        click.echo("tags: none (no model was promoted, so there is no champion to tag with)")
        return
    click.echo(
        f"tags: {tagged['out']}/tags-*.jsonl  (seen {tagged['seen']} = auto {tagged['auto']} + "
        f"review {tagged['review']} + rejected {tagged['rejected']}); "
        f"review queue: {tagged['out']}/review.jsonl"
    )
