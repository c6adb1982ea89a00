"""Helper process for test_horovod_averaging: train a small model with the production step.

Run as a Horovod rank (`horovodrun -np 2 ... --mode average|no-average`) or as one plain
process on the union of both ranks' data (`--mode union`); saves the final weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import horovod.tensorflow as hvd
import keras
import numpy as np

from components.train.loop import broadcast_state, make_train_step

STEPS = 5
PER_RANK = 16


def rank_data(rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Different data per rank, reproducible everywhere."""
    rng = np.random.default_rng(100 + rank)
    x = rng.normal(size=(PER_RANK, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=PER_RANK).astype(np.int64)
    return x, y


def build_model(seed: int) -> keras.Model:
    """A small classifier whose initial weights depend on `seed`."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def main() -> None:
    """Train STEPS steps and write the weights to <out>/<mode>-rank<r>.npz."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["average", "no-average", "union"], required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    hvd.init()
    if args.mode == "union":
        parts = [rank_data(0), rank_data(1)]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
    else:
        x, y = rank_data(hvd.rank())
    # Each rank starts from different random weights: the broadcast must fix that.
    model = build_model(seed=hvd.rank())
    optimizer = keras.optimizers.SGD(learning_rate=0.5, momentum=0.9)
    broadcast_state(model, optimizer)
    step = make_train_step(
        model,
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(),
        average_gradients=args.mode != "no-average",
    )
    for _ in range(STEPS):
        step(x, y)
    weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(Path(args.out) / f"{args.mode}-rank{hvd.rank()}.npz", **weights)


if __name__ == "__main__":
    main()
