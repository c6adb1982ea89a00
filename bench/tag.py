"""Benchmark: bulk tagging end to end vs the model alone, vs hand-written loops, and memory.

All in one run, same model (EfficientNet-Lite0 tagger at 224 px) and batch size:
  1. end-to-end `gallerytag tag` pipeline images/s (DirectRunner, all cores) on N photo-sized
     JPEGs vs model-only images/s on pre-decoded batches (goal: ratio >= 0.85);
  2. speed-up over the loop a user writes by hand (open, decode, predict one image at a time)
     and over the retrain blog's one-process-per-image script;
  3. peak memory (RSS of the whole process tree) of the pipeline at a small and a large N.
Usage: .venv/bin/python bench/tag.py [--images 20000] [--small 5000] [--batch 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.gallery import make_gallery, subset  # noqa: E402

ONE_IMAGE_SCRIPT = """
import sys, numpy as np, keras
from PIL import Image
model = keras.saving.load_model(sys.argv[1])
image = Image.open(sys.argv[2]).convert("RGB").resize((224, 224))
print(model.predict(np.asarray(image, np.float32)[None], verbose=0).argmax())
"""


class PeakMemory:
    """Samples the RSS of this process and all its children every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker may exit meanwhile
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def build_tagger(workdir: Path):
    """A Lite0 tagger (ImageNet backbone, 2-label head) saved as a .keras file."""
    from components.common.tracking import TaggerSpec
    from models.head import build_classifier
    from models.registry import build_backbone

    path = workdir / "lite0-tagger.keras"
    if not path.exists():
        build_classifier(build_backbone("efficientnet_lite0", 224), 2).save(path)
    return TaggerSpec(str(path), ["china", "flower"], 224, "pad", False, "bench", None, "1")


def model_only(tagger, files: list[Path], batch: int, images: int) -> float:
    """images/s of predict_on_batch on batches decoded beforehand (cycled to `images`)."""
    import keras

    from components.common.images import load_for_model

    model = keras.saving.load_model(tagger.model_file)
    decoded = np.stack([load_for_model(f.read_bytes(), 224) for f in files[: batch * 4]])
    decoded = decoded.astype(np.float32)
    model.predict_on_batch(decoded[:batch])  # warm-up
    steps = max(1, images // batch)
    started = time.perf_counter()
    for step in range(steps):
        start = (step % 4) * batch
        model.predict_on_batch(decoded[start : start + batch])
    return steps * batch / (time.perf_counter() - started)


def pipeline(tagger, source: Path, out: Path, batch: int) -> tuple[float, int]:
    """(images/s, peak RSS bytes) of the real tagging pipeline on `source`."""
    from components.tag.pipeline import TagOutputs, run

    with PeakMemory() as memory:
        summary = run(str(source), str(out), tagger, outputs=TagOutputs(shards=4))
    assert summary.seen == summary.auto + summary.review + summary.rejected
    return summary.images_per_second, memory.peak


def hand_loop(tagger, files: list[Path]) -> float:
    """images/s of open -> full decode -> resize -> model.predict, one image at a time."""
    import keras
    from PIL import Image

    model = keras.saving.load_model(tagger.model_file)
    started = time.perf_counter()
    for path in files:
        image = Image.open(path).convert("RGB").resize((224, 224))
        model.predict(np.asarray(image, np.float32)[None], verbose=0)
    return len(files) / (time.perf_counter() - started)


def process_per_image(tagger, files: list[Path]) -> float:
    """images/s of one Python process per image (load TF and the model each time)."""
    started = time.perf_counter()
    for path in files:
        subprocess.run([sys.executable, "-c", ONE_IMAGE_SCRIPT, tagger.model_file, str(path)],
                       check=True, capture_output=True)  # fmt: skip
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20000, help="large run")
    parser.add_argument("--small", type=int, default=5000, help="small run (memory ratio)")
    parser.add_argument("--batch", type=int, default=64, help="BatchElements max batch size")
    parser.add_argument("--hand-images", type=int, default=300)
    parser.add_argument("--process-images", type=int, default=5)
    parser.add_argument("--workdir", default=str(ROOT / ".cache" / "bench-tag"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    gallery = make_gallery(workdir / "gallery", args.images)
    files = sorted(gallery.glob("*.jpg"))[: args.images]
    tagger = build_tagger(workdir)

    small_rate, small_peak = pipeline(
        tagger, subset(gallery, args.small, workdir / f"first-{args.small}"), workdir / "out-s",
        args.batch,
    )  # fmt: skip
    large_rate, large_peak = pipeline(tagger, gallery, workdir / "out-l", args.batch)
    model_rate = model_only(tagger, files, args.batch, min(args.images, 4000))
    hand_rate = hand_loop(tagger, files[: args.hand_images])
    process_rate = process_per_image(tagger, files[: args.process_images])

    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{args.images} JPEGs of 1024x768, EfficientNet-Lite0 tagger at 224 px, "
        f"batch <= {args.batch}, {os.cpu_count()} cores"
    )
    rows = [
        (f"pipeline end to end ({args.images} images)", f"{large_rate:.1f} images/s"),
        (f"pipeline end to end ({args.small} images)", f"{small_rate:.1f} images/s"),
        ("model only, pre-decoded batches", f"{model_rate:.1f} images/s"),
        ("ratio pipeline / model (goal >= 0.85)", f"{large_rate / model_rate:.3f}"),
        (f"hand-written loop ({args.hand_images} images)", f"{hand_rate:.1f} images/s"),
        ("  pipeline speed-up over it", f"{large_rate / hand_rate:.1f}x"),
        (f"one process per image ({args.process_images} images)", f"{process_rate:.2f} images/s"),
        ("  pipeline speed-up over it", f"{large_rate / process_rate:.0f}x"),
        (f"peak RSS at {args.small} images", f"{small_peak / 2**20:.0f} MiB"),
        (f"peak RSS at {args.images} images", f"{large_peak / 2**20:.0f} MiB"),
        ("memory ratio large / small (goal <= 1.2)", f"{large_peak / small_peak:.2f}"),
    ]
    for name, value in rows:
        print(f"  {name:<45} {value}")


if __name__ == "__main__":
    main()
