"""Training input: sharding by rank splits the records, caching gives the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.common import dataset
from components.common.tfdata import make_dataset
from components.ingest.core import IngestConfig
from components.ingest.pipeline import run as ingest
from tests.conftest import write_pattern_gallery


def test_rank_shards_partition_the_records(tmp_path: Path) -> None:
    """Two ranks see disjoint halves whose union is the whole split; cache changes nothing."""
    gallery = write_pattern_gallery(tmp_path / "g", 10, ("a", "b"))
    out = str(tmp_path / "d")
    ingest(str(gallery), out, IngestConfig(image_size=32, split_ratios=(1.0, 0.0, 0.0)),
           ["--direct_running_mode=in_memory"])  # fmt: skip
    manifest = dataset.read_manifest(out)
    files = dataset.shard_paths(out, manifest, "train")

    def sums(rank: int, cache: bool) -> list[float]:
        batches = make_dataset(files, 32, 4, training=False, num_shards=2, shard_index=rank,
                               cache=cache)  # fmt: skip
        return sorted(float(np.sum(image)) for images, _ in batches for image in images.numpy())

    rank0, rank1 = sums(0, False), sums(1, False)
    assert len(rank0) + len(rank1) == 20
    assert not set(rank0) & set(rank1)
    assert sums(0, True) == rank0
    train = make_dataset(files, 32, 4, training=True, augment=True, cache=True)
    images, labels = next(iter(train))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4,)
