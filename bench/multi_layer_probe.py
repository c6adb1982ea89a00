"""Pooled vs multi-layer linear probes on the frozen backbone, no training (issue 14).

    python bench/multi_layer_probe.py DATASET_DIR [DATASET_DIR ...] [--held-out HELD_OUT_DIR]

Each DATASET_DIR is a `gallerytag ingest` output. One pass of EfficientNet-Lite0 embeds every
split; `components.common.probe.fit_probe` (C chosen on validation) is then fitted on the
pooled features (the floor `evaluate` reports), on the pooled outputs of all 16 blocks plus
the pooled features (Head2Toe-like, 3,088 values), and on the blocks from 8 and from 12 up.
Prints one JSON line per dataset: validation and test top-1 of each, and the held-out test
split's (`bench/fashion_held_out.py`) when given and its labels match.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np

from bench.recipe_variants import block_taps, held_out, load, predict
from components.common import dataset
from components.common.probe import fit_probe
from models.registry import build_backbone


def feature_slices(widths: list[int]) -> dict[str, slice]:
    """Which columns of the taps each probe sees, from the taps' widths (blocks, pooled)."""
    total, ends = sum(widths), np.cumsum(widths)
    slices = {"pooled": slice(total - widths[-1], total), "all_blocks": slice(0, total)}
    for first in (8, 12):
        slices[f"blocks_{first}_up"] = slice(int(ends[first - 1]), total)
    return slices


def compare(data: str, held_out_dir: str) -> dict:
    """Every probe's validation, test (and held-out) top-1 on one ingested dataset."""
    started = time.time()
    manifest = dataset.read_manifest(data)
    splits = {name: load(data, name, manifest) for name in ("train", "validation", "test")}
    if held_out_dir and set(dataset.read_manifest(held_out_dir).labels) <= set(manifest.labels):
        splits["held_out"] = held_out(held_out_dir, manifest.labels)
    taps = block_taps(build_backbone("efficientnet_lite0", manifest.image_size))
    features = {name: predict(taps, images) for name, (images, _) in splits.items()}
    labels = {name: y for name, (_, y) in splits.items()}
    widths = [int(tensor.shape[-1]) for tensor in taps.get_layer("taps").input]
    result: dict = {"data": data, "features": sum(widths)}
    for name, columns in feature_slices(widths).items():
        probe = fit_probe(
            features["train"][:, columns], labels["train"], len(manifest.labels),
            features["validation"][:, columns], labels["validation"],
        )  # fmt: skip
        scored = {s: probe.accuracy(features[s][:, columns], labels[s]) for s in features}
        result[name] = {s: round(v, 4) for s, v in scored.items() if s != "train"} | {"c": probe.c}
    result["seconds"] = round(time.time() - started)
    return result


def main() -> None:
    """Compare the probes on every dataset given, one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--held-out", default="", help="an ingest whose test split is scored too")
    args = parser.parse_args()
    for data in args.data:
        print(json.dumps(compare(data, args.held_out)), flush=True)


if __name__ == "__main__":
    main()
