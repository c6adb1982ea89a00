"""Realistic gallery images for benchmarks: photo-sized JPEGs (about 1024x768) made from
varied crops, flips and colour shifts of the photos scikit-learn ships; cached on disk."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

SIZE = (1024, 768)


def _one(args: tuple[Path, int]) -> None:
    from sklearn.datasets import load_sample_image

    folder, index = args
    rng = np.random.default_rng(index)
    photo = Image.fromarray(load_sample_image(("china.jpg", "flower.jpg")[index % 2]))
    width, height = photo.size
    crop_w, crop_h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    image = photo.crop((left, top, left + crop_w, top + crop_h)).resize(SIZE, Image.BICUBIC)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    image.save(folder / f"{index:07d}.jpg", quality=int(rng.integers(80, 95)))


def make_gallery(folder: Path, count: int) -> Path:
    """`count` JPEGs in `folder` (flat); files already there are reused."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [(folder, i) for i in range(count) if not (folder / f"{i:07d}.jpg").exists()]
    if missing:
        with multiprocessing.Pool() as pool:
            pool.map(_one, missing, chunksize=64)
    return folder


def subset(folder: Path, count: int, target: Path) -> Path:
    """A folder holding the first `count` images of `folder` as symlinks (no copies)."""
    target.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        link = target / f"{index:07d}.jpg"
        if not link.exists():
            link.symlink_to(folder / f"{index:07d}.jpg")
    return target


def labelled_subset(folder: Path, count: int, target: Path) -> Path:
    """Class folders (`china/`, `flower/`, by the source photo) of symlinks to the first
    `count` images: an ingest source without copying files."""
    for index in range(count):
        label = ("china", "flower")[index % 2]
        link = target / label / f"{index:07d}.jpg"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder / f"{index:07d}.jpg")
    return target
