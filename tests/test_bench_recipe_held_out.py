"""bench/recipe_variants.py --held-out: another ingest's test split, its labels renumbered by
name to the training data's order, and a clear error for a label the training data lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.ingest.core import IngestConfig
from components.ingest.pipeline import run as ingest
from tests.conftest import jpeg_bytes, pattern_image

IN_MEMORY = ["--direct_running_mode=in_memory"]
ALL_TEST = IngestConfig(image_size=32, split_ratios=(0.0, 0.0, 1.0))


def ingest_counts(root: Path, counts: dict[str, tuple[int, int]]) -> str:
    """Ingest a gallery of label -> (pattern kind, images), every image in the test split."""
    gallery = root / "gallery"
    for label, (kind, n) in counts.items():
        (gallery / label).mkdir(parents=True)
        for index in range(n):
            pixels = pattern_image(kind, seed=1000 * kind + index)
            (gallery / label / f"{index:03d}.jpg").write_bytes(jpeg_bytes(pixels))
    ingest(str(gallery), str(root / "dataset"), ALL_TEST, beam_args=IN_MEMORY)
    return str(root / "dataset")


def test_held_out_labels_are_renumbered_by_name(tmp_path: Path) -> None:
    """Training labels (a-z order) horizontal, square, vertical; the held-out set has only
    vertical (3) and horizontal (5), which its own manifest numbers 1 and 0."""
    from bench.recipe_variants import held_out

    data = ingest_counts(tmp_path, {"vertical": (2, 3), "horizontal": (0, 5)})
    images, labels = held_out(data, ["horizontal", "square", "vertical"])
    assert images.shape == (8, 32, 32, 3)
    assert np.bincount(labels, minlength=3).tolist() == [5, 0, 3]


def test_a_label_the_training_data_lacks_is_a_clear_error(tmp_path: Path) -> None:
    """Scoring images of an unknown label would count them all as errors: refuse instead."""
    from bench.recipe_variants import held_out

    data = ingest_counts(tmp_path, {"horizontal": (0, 3), "diagonal": (1, 3)})
    with pytest.raises(SystemExit, match=r"labels the training data lacks: \['diagonal'\]"):
        held_out(data, ["horizontal", "vertical"])
