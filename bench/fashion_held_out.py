"""A large held-out test set for the fashion galleries: Fashion-MNIST test-set images, ingested.

    python bench/fashion_held_out.py --per-class 200 --out build/fashion-held-out

The fashion galleries of `bench/quality.py` draw from Fashion-MNIST's training set, so its test
set never overlaps them. The images are written as the galleries' are (grayscale JPEG,
quality 95) and go through the same `gallerytag ingest`, all into the test split, so
`bench/recipe_variants.py --held-out OUT/dataset` scores a recipe on 10 x per-class images
instead of a gallery's 20% test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import cli  # noqa: E402
from gallerytag.gallery import load_fashion_mnist, write_class_folders  # noqa: E402


def main() -> None:
    """Write the gallery and ingest it as a test-only dataset under --out/dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "fashion-held-out")
    args = parser.parse_args()
    _, (images, labels) = load_fashion_mnist()  # the test set: never in a fashion gallery
    gallery = args.out / "gallery"
    rng = np.random.default_rng(args.seed)
    write_class_folders(gallery, images, labels, args.per_class, rng, prefix="t")
    cli("ingest", str(gallery), "--out", str(args.out / "dataset"), "--split", "0/0/100")
    print(f"held-out dataset: {args.out / 'dataset'} ({10 * args.per_class} test images)")


if __name__ == "__main__":
    main()
