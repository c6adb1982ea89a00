"""Benchmark: what each offline EfficientNet-Lite backbone costs on this CPU.

For Lite0/1/2 at their default input sizes, measured in one run, each on one in-memory batch
of photo crops (so no input pipeline is timed):
  1. frozen-feature extraction, images/s (`predict_on_batch` of the backbone: what the linear
     probe and tagging pay per image);
  2. a fine-tuning train step with the top N blocks unfrozen, images/s (the trainer's own
     `make_train_step` on one Horovod process, BatchNorm frozen as in training);
  3. parameter counts: whole backbone, and trainable in that fine-tuning phase.
The backbones are timed in interleaved rounds (median per backbone): other jobs share the cores.
Usage: .venv/bin/python bench/backbones.py [--batch-size 32] [--rounds 5] [--per-round 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def photo_batch(size: int, batch_size: int) -> np.ndarray:
    """`batch_size` random square crops of sklearn's two sample photos, resized to `size`."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(load_sample_image(n)) for n in ("china.jpg", "flower.jpg")]
    crops = []
    for index in range(batch_size):
        photo = photos[index % 2]
        side = int(min(photo.size) * rng.uniform(0.5, 1.0))
        left = int(rng.integers(0, photo.size[0] - side + 1))
        top = int(rng.integers(0, photo.size[1] - side + 1))
        box = (left, top, left + side, top + side)
        crops.append(np.asarray(photo.resize((size, size), box=box), dtype=np.float32))
    return np.stack(crops)


def images_per_s(run, images: int, repeats: int) -> float:
    """Images per second of `run()` (which processes `images`) over `repeats` timed calls."""
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return images * repeats / (time.perf_counter() - started)


def prepare(name: str, batch_size: int, finetune_blocks: int) -> dict:
    """Backbone, tagger and train step of one Lite, warmed up, with its parameter counts."""
    import keras
    import tensorflow as tf

    from components.train.loop import broadcast_state, make_train_step
    from models.head import build_classifier, set_trainable_top_blocks
    from models.registry import BACKBONES, build_backbone

    spec = BACKBONES[name]
    size = spec.default_input_size
    keras.utils.set_random_seed(0)
    pixels = photo_batch(size, batch_size)
    backbone = build_backbone(name, size)
    model = build_classifier(backbone, 2)
    set_trainable_top_blocks(model, spec, finetune_blocks)
    optimizer = keras.optimizers.Adam(1e-4)
    broadcast_state(model, optimizer)
    step = make_train_step(model, optimizer, keras.losses.SparseCategoricalCrossentropy())
    images = tf.constant(pixels)
    labels = tf.constant(np.arange(batch_size) % 2, tf.int64)

    def features():
        backbone.predict_on_batch(pixels)  # BatchNorm in inference mode, no gradients

    def train():
        loss, _ = step(images, labels)
        float(loss)  # wait for the step to finish

    for _ in range(2):  # trace and compile both functions before timing
        features()
        train()
    return {
        "name": name,
        "size": size,
        "features": features,
        "train": train,
        "params": backbone.count_params(),
        "trainable": sum(int(np.prod(v.shape)) for v in model.trainable_variables),
    }


def main() -> None:
    """Measure every offline Lite backbone and print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per backbone")
    parser.add_argument("--per-round", type=int, default=2, help="batches/steps per round")
    parser.add_argument("--finetune-blocks", type=int, default=4)
    args = parser.parse_args()
    import horovod.tensorflow as hvd

    hvd.init()  # one process, as `gallerytag train` runs by default
    rows = [prepare(name, args.batch_size, args.finetune_blocks) for name in LITES]
    # Other work shares the cores: interleave the backbones round by round so a busy spell
    # hits all of them, and report each one's median round.
    rates: dict[str, dict[str, list[float]]] = {row["name"]: {"features": [], "train": []}
                                                for row in rows}  # fmt: skip
    for _ in range(args.rounds):
        for row in rows:
            for kind in ("features", "train"):
                rate = images_per_s(row[kind], args.batch_size, args.per_round)
                rates[row["name"]][kind].append(rate)
    for row in rows:
        row["features_per_s"] = float(np.median(rates[row["name"]]["features"]))
        row["train_per_s"] = float(np.median(rates[row["name"]]["train"]))
    base = rows[0]
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"batch {args.batch_size}, median of {args.rounds} interleaved rounds of "
        f"{args.per_round} feature batches and {args.per_round} train steps "
        f"(top {args.finetune_blocks} blocks unfrozen) per backbone, {os.cpu_count()} cores"
    )
    print("| backbone | input | features img/s | train step img/s | params (M) "
          "| trainable (M) | features vs Lite0 | train vs Lite0 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['name']} | {row['size']} | {row['features_per_s']:.1f} "
            f"| {row['train_per_s']:.1f} | {row['params'] / 1e6:.2f} "
            f"| {row['trainable'] / 1e6:.2f} "
            f"| {row['features_per_s'] / base['features_per_s']:.2f} "
            f"| {row['train_per_s'] / base['train_per_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
