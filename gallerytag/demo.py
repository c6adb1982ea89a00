"""`gallerytag demo`: the whole embedded path on a Fashion-MNIST gallery, on one machine.

Materialises labelled JPEGs in class folders (plus a few broken files, to show rejections)
and an unlabelled inbox, then ingest -> train (Horovod) -> evaluate -> tag.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from pathlib import Path

import click
import numpy as np
from PIL import Image

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# Fashion-MNIST's own names, made safe as folder names ("T-shirt/top" holds a slash).
CLASS_NAMES = [
    "tshirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
]  # fmt: skip


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        data = stream.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train images, labels), (test images, labels): Debian's package, else keras.datasets."""
    if (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        return (
            (
                _read_idx(DEBIAN_DIR / "train-images-idx3-ubyte.gz"),
                _read_idx(DEBIAN_DIR / "train-labels-idx1-ubyte.gz"),
            ),
            (
                _read_idx(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz"),
                _read_idx(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz"),
            ),
        )
    import keras

    return keras.datasets.fashion_mnist.load_data()


def write_broken_files(folder: Path) -> list[str]:
    """Drop a truncated JPEG, an empty file and a text file named .jpg into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    # A noisy photo-sized image, so cutting it in half cuts the pixel data, not the header.
    noise = np.random.default_rng(7).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    (folder / "broken_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "broken_empty.jpg").write_bytes(b"")
    (folder / "broken_text.jpg").write_text("this is a note, not a photo\n")
    return ["broken_truncated.jpg", "broken_empty.jpg", "broken_text.jpg"]


def materialise_gallery(out: Path, per_class: int, inbox_size: int, seed: int = 0) -> None:
    """Write `gallery/<label>/*.jpg` (labelled) and `inbox/*.jpg` (unlabelled) under `out`."""
    (train_x, train_y), (test_x, _) = load_fashion_mnist()
    rng = np.random.default_rng(seed)
    for label_id, name in enumerate(CLASS_NAMES):
        folder = out / "gallery" / name
        folder.mkdir(parents=True, exist_ok=True)
        chosen = rng.choice(np.flatnonzero(train_y == label_id), per_class, replace=False)
        for index in chosen:
            Image.fromarray(train_x[index], "L").save(folder / f"{index:05d}.jpg", quality=95)
    write_broken_files(out / "gallery" / CLASS_NAMES[0])
    inbox = out / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for index in rng.choice(len(test_x), inbox_size, replace=False):
        Image.fromarray(test_x[index], "L").save(inbox / f"new_{index:05d}.jpg", quality=95)
    write_broken_files(inbox)


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
    # Imported here so `gallerytag --help` stays fast (these pull in TF and Beam).
    from components.common.tracking import LocalStore, fetch_tagger, gallerytag_home, tracking
    from components.evaluate.promote import promote
    from components.evaluate.run import evaluate
    from components.ingest.core import IngestConfig
    from components.ingest.pipeline import run as ingest
    from components.tag.pipeline import run as tag
    from components.tag.policy_source import choose_policy, describe
    from components.train.config import TrainConfig
    from components.train.launcher import train

    root = Path(out).resolve()
    os.environ.setdefault("GALLERYTAG_HOME", str(root / "mlflow"))
    store = LocalStore(gallerytag_home())
    click.echo(f"[1/6] writing the demo gallery ({per_class} images x 10 classes) to {root}")
    materialise_gallery(root, per_class, inbox_size)

    click.echo("[2/6] ingest: validate, dedupe, split, shard (Beam)")
    dataset_dir = str(root / "dataset")
    summary = ingest(str(root / "gallery"), dataset_dir, IngestConfig(image_size=image_size))
    click.echo(
        f"      seen {summary.seen} = accepted {summary.accepted} + rejected {summary.rejected}"
        f" + duplicates {summary.duplicates}; rejected: {summary.rejected_reasons}"
    )
    with tracking() as uri:
        click.echo(f"[3/6] train: horovodrun -np {workers}, tracked in MLflow at {uri}")
        config = TrainConfig(
            data=dataset_dir,
            workers=workers,
            head_epochs=head_epochs,
            finetune_epochs=finetune_epochs,
            experiment="gallerytag-demo",
            registered_model="fashion-demo",
        )
        result = train(config, uri)
        model_uri = f"models:/{result.registered_model}/{result.version}"
        click.echo(f"[4/6] evaluate {model_uri} on the test split (metrics, report)")
        evaluation = evaluate(model_uri, dataset_dir, str(root / "evaluation"))
        click.echo("[5/6] promotion gate: does it beat the current champion?")
        decision = promote(model_uri, dataset_dir, decision_path=str(root / "decision.json"))
        served = "models:/fashion-demo@champion"
        click.echo(f"      {'promoted' if decision.promote else 'not promoted'}: "
                   f"{'; '.join(decision.reasons)}")  # fmt: skip
        click.echo(f"[6/6] tag the unlabelled inbox with {served} (Beam RunInference)")
        with tempfile.TemporaryDirectory(prefix="gallerytag-model-") as tmp:
            tagger = fetch_tagger(served, tmp)
            policy = choose_policy(tagger, None, "model", tmp)  # the champion's own evaluation
            click.echo(f"      {describe(policy)}")
            tagged = tag(str(root / "inbox"), str(root / "tags"), tagger, policy)

    click.echo("")
    click.echo(f"test top-1 accuracy: {evaluation.top1:.3f} ({evaluation.images} test images)")
    if evaluation.probe_top1 is not None:
        click.echo(
            f"  linear probe on the frozen backbone: {evaluation.probe_top1:.3f} "
            f"(fine-tuning adds {evaluation.top1 - evaluation.probe_top1:+.3f})"
        )
    click.echo(f"evaluation report: {evaluation.report}")
    click.echo(f"MLflow run id: {result.run_id} (experiment gallerytag-demo)")
    click.echo(f"  browse it:  {store.ui_command()}")
    click.echo(
        f"tags: {root / 'tags'}/tags-*.jsonl  (seen {tagged.seen} = auto {tagged.auto} + "
        f"review {tagged.review} + rejected {tagged.rejected}); "
        f"review queue: {root / 'tags' / 'review.jsonl'}"
    )
