"""A labelled Fashion-MNIST gallery written as JPEG files (plus broken files and an unlabelled
inbox): the demo's input, the local pipeline run's default source and the quality benchmark's
Fashion-MNIST galleries."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

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


def write_class_folders(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    per_class: int,
    rng: np.random.Generator,
    prefix: str = "",
) -> None:
    """`per_class` of the 28 x 28 grayscale `images` per label, drawn with `rng`, as
    `folder/<label>/<prefix><index>.jpg` (JPEG quality 95)."""
    for label_id, name in enumerate(CLASS_NAMES):
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for index in rng.choice(np.flatnonzero(labels == label_id), per_class, replace=False):
            Image.fromarray(images[index], "L").save(
                target / f"{prefix}{index:05d}.jpg", quality=95
            )


def materialise_gallery(out: Path, per_class: int, inbox_size: int, seed: int = 0) -> None:
    """Write `gallery/<label>/*.jpg` (labelled) and `inbox/*.jpg` (unlabelled) under `out`."""
    (train_x, train_y), (test_x, _) = load_fashion_mnist()
    rng = np.random.default_rng(seed)
    write_class_folders(out / "gallery", train_x, train_y, per_class, rng)
    write_broken_files(out / "gallery" / CLASS_NAMES[0])
    inbox = out / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for index in rng.choice(len(test_x), inbox_size, replace=False):
        Image.fromarray(test_x[index], "L").save(inbox / f"new_{index:05d}.jpg", quality=95)
    write_broken_files(inbox)
