"""write_class_folders (the demo gallery, bench/fashion_held_out.py): each image under its own
label's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gallerytag.gallery import CLASS_NAMES, write_class_folders


def test_each_image_lands_in_its_labels_folder(tmp_path: Path) -> None:
    """Image i is filled with grey level 20 * label: the folder a file is in must say that."""
    labels = np.repeat(np.arange(len(CLASS_NAMES)), 5)
    images = np.stack([np.full((28, 28), 20 * label, np.uint8) for label in labels])
    gallery = tmp_path / "gallery"
    write_class_folders(gallery, images, labels, 3, np.random.default_rng(0), prefix="t")
    for label_id, name in enumerate(CLASS_NAMES):
        files = sorted((gallery / name).glob("t*.jpg"))
        assert len(files) == 3
        for file in files:
            index = int(file.stem.removeprefix("t"))
            assert labels[index] == label_id
            pixels = np.asarray(Image.open(file))
            assert abs(float(pixels.mean()) - 20 * label_id) < 2  # JPEG keeps a flat grey
