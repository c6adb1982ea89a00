"""Benchmark: is the training input pipeline ever the bottleneck, and what does allreduce cost?

Measured side by side in one run, on the same model, batch size and steps:
  1. training images/s reading real TFRecord shards (decode + augment + prefetch) vs the same
     train step fed one in-memory synthetic batch (goal: ratio >= 0.9);
  2. under `horovodrun -np 2`, the share of step time spent in the gradient allreduce
     (step time with averaging minus without, over with).
Usage: .venv/bin/python bench/train_input.py [--images 2048] [--image-size 224] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_dataset_dir(workdir: Path, images: int, image_size: int) -> str:
    """Ingest `images` photo-like JPEGs (crops of sklearn's sample photos) once; reuse later."""
    out = workdir / f"dataset-{images}-{image_size}"
    if (out / "manifest.json").exists():
        return str(out)
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from components.ingest.core import IngestConfig
    from components.ingest.pipeline import run as ingest

    rng = np.random.default_rng(0)
    photos = [load_sample_image(name) for name in ("china.jpg", "flower.jpg")]
    gallery = workdir / f"gallery-{images}"
    for index in range(images):
        label = index % 2
        photo = photos[label]
        top, left = rng.integers(0, 100), rng.integers(0, 200)
        crop = photo[top : top + 320, left : left + 420]
        folder = gallery / ("china" if label == 0 else "flower")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(folder / f"{index:06d}.jpg", quality=90)
    config = IngestConfig(image_size=image_size, split_ratios=(1.0, 0.0, 0.0))
    ingest(str(gallery), str(out), config)
    return str(out)


def build(args: argparse.Namespace, average: bool):
    """Model, train step and optimizer as the trainer builds them (fine-tuning phase)."""
    import keras

    from components.train.loop import broadcast_state, make_train_step
    from models.head import build_classifier, set_trainable_top_blocks
    from models.registry import BACKBONES, build_backbone

    keras.utils.set_random_seed(0)
    model = build_classifier(build_backbone(args.backbone, args.image_size), 2)
    set_trainable_top_blocks(model, BACKBONES[args.backbone], args.finetune_blocks)
    optimizer = keras.optimizers.Adam(1e-4)
    broadcast_state(model, optimizer)
    loss = keras.losses.SparseCategoricalCrossentropy()
    return model, make_train_step(model, optimizer, loss, average_gradients=average)


def time_steps(step, batches, steps: int, warmup: int = 5) -> float:
    """Seconds per step over `steps` steps after `warmup` untimed ones."""
    for _ in range(warmup):
        step(*next(batches))
    started = time.perf_counter()
    for _ in range(steps):
        loss, _ = step(*next(batches))
    float(loss)  # wait for the last step
    return (time.perf_counter() - started) / steps


def input_ratio(args: argparse.Namespace) -> dict:
    """Single process: shards vs in-memory tensors, same step."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from components.common import dataset
    from components.common.tfdata import make_dataset

    hvd.init()
    data = make_dataset_dir(Path(args.workdir), args.images, args.image_size)
    manifest = dataset.read_manifest(data)
    files = dataset.shard_paths(data, manifest, "train")
    _, step = build(args, average=True)
    real = iter(make_dataset(files, args.image_size, args.batch_size, training=True, augment=True))
    images = tf.random.uniform((args.batch_size, args.image_size, args.image_size, 3), 0, 255)
    labels = tf.zeros((args.batch_size,), tf.int64)

    def synthetic():
        while True:
            yield images, labels

    real_s = time_steps(step, real, args.steps)
    synthetic_s = time_steps(step, synthetic(), args.steps)
    return {
        "shards_images_per_s": args.batch_size / real_s,
        "in_memory_images_per_s": args.batch_size / synthetic_s,
        "ratio": synthetic_s / real_s,
    }


def allreduce_share(args: argparse.Namespace) -> None:
    """Run inside horovodrun: step time with and without the allreduce, on synthetic data."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(max(1, os.cpu_count() // hvd.size()))
    images = tf.random.uniform((args.batch_size, args.image_size, args.image_size, 3), 0, 255)
    labels = tf.zeros((args.batch_size,), tf.int64)

    def synthetic():
        while True:
            yield images, labels

    model, averaged = build(args, average=True)
    with_allreduce = time_steps(averaged, synthetic(), args.steps)
    _, plain = build(args, average=False)
    without = time_steps(plain, synthetic(), args.steps)
    gradient_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.trainable_variables)
    if hvd.rank() == 0:
        print(json.dumps({
            "step_s_with_allreduce": with_allreduce,
            "step_s_without": without,
            "allreduce_share": max(0.0, (with_allreduce - without) / with_allreduce),
            "gradient_bytes": gradient_bytes,
        }))  # fmt: skip


def main() -> None:
    """Run both measurements and print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--finetune-blocks", type=int, default=2)
    parser.add_argument("--workdir", default=str(ROOT / ".cache" / "bench-train"))
    parser.add_argument("--allreduce-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-allreduce", action="store_true",
                        help="only the single-process figures (bench/gpu.sh: one GPU)")  # fmt: skip
    args = parser.parse_args()
    if args.allreduce_only:
        allreduce_share(args)
        return
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    single = input_ratio(args)
    if args.no_allreduce:
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_logical_devices()]
        print(f"command: {' '.join(sys.argv)}")
        print(f"backbone {args.backbone}, {args.image_size}px, batch {args.batch_size}, "
              f"{args.steps} timed steps, devices {devices}")  # fmt: skip
        print(f"  training, real shards      : {single['shards_images_per_s']:8.1f} images/s")
        print(f"  training, in-memory tensors: {single['in_memory_images_per_s']:8.1f} images/s")
        print(f"  ratio shards / in-memory   : {single['ratio']:8.3f}   (goal >= 0.9)")
        return
    horovodrun = str(Path(sys.executable).parent / "horovodrun")
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                 if k not in ("allreduce_only", "no_allreduce")]  # fmt: skip
    output = subprocess.run(
        [horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, __file__,
         *forwarded, "--allreduce-only"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    line = next(x for x in output.splitlines() if "allreduce_share" in x)
    multi = json.loads(line[line.index("{") :])
    print(f"command: {' '.join(sys.argv)}")
    print(f"backbone {args.backbone}, {args.image_size}px, batch {args.batch_size}/worker, "
          f"fine-tuning top {args.finetune_blocks} blocks, {args.steps} timed steps")  # fmt: skip
    print(f"  1 process, real shards      : {single['shards_images_per_s']:8.1f} images/s")
    print(f"  1 process, in-memory tensors: {single['in_memory_images_per_s']:8.1f} images/s")
    print(f"  ratio shards / in-memory    : {single['ratio']:8.3f}   (goal >= 0.9)")
    print(f"  horovodrun -np 2, step with allreduce   : {multi['step_s_with_allreduce']:.3f} s")
    print(f"  horovodrun -np 2, step without allreduce: {multi['step_s_without']:.3f} s")
    print(f"  share of step time in allreduce         : {multi['allreduce_share']:.3f}")
    print(f"  gradient size per step                  : {multi['gradient_bytes'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
