"""Benchmark: ingest throughput against plain decoding of the same files, and its memory.

All in one run, on photo-sized JPEGs (about 1024x768, bench/gallery.py), all cores:
  1. decode-only images/s: Pillow full decode, and Pillow reduced-scale (draft) decode;
  2. the real ingest pipeline's images/s (local multi-processing runner, default settings);
  3. ratio ingest / full decode (goal >= 0.7), and peak RSS of the whole process tree at a
     small and a large image count (goal: ratio <= 1.2);
  4. ingest's per-image work alone (its Inspect step in a process pool, no Beam), which
     splits the gap into image work and Beam's share (start-up, stages, shutdown).
The full decode is timed just before and just after the large ingest run and averaged: this
machine's speed drifts by up to ~30% from one minute to the next.
Usage: .venv/bin/python bench/ingest.py [--images 20000] [--small 5000] [--image-size 224]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.gallery import labelled_subset, make_gallery  # noqa: E402
from bench.tag import PeakMemory  # noqa: E402


def _full_decode(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.size[0]


def _draft_decode(args: tuple[Path, int]) -> int:
    from components.common.images import decode_image

    path, size = args
    return decode_image(path.read_bytes(), shrink_to=(size, "pad")).size[0]


def decode_rate(files: list[Path], size: int | None) -> float:
    """images/s decoding every file on all cores (full, or reduced-scale for `size`)."""
    started = time.perf_counter()
    with multiprocessing.Pool() as pool:
        if size is None:
            pool.map(_full_decode, files, chunksize=64)
        else:
            pool.map(_draft_decode, [(f, size) for f in files], chunksize=64)
    return len(files) / (time.perf_counter() - started)


_inspect = None


def _start_inspect(staging: str, size: int) -> None:
    """Pool initialiser: one Inspect DoFn per process, staging into its own pack."""
    global _inspect
    from components.ingest.core import IngestConfig
    from components.ingest.steps import Inspect

    _inspect = Inspect(IngestConfig(image_size=size), staging)
    _inspect.start_bundle()


def _inspect_one(path: Path) -> int:
    """Run Inspect on one file; the number of outputs (1: fingerprint or rejection)."""
    return len(list(_inspect.process((str(path), "label", None))))


def inspect_rate(files: list[Path], size: int, scratch: Path) -> float:
    """images/s of ingest's per-image step (read, validate, hash, resize, stage) on all
    cores in a process pool: the pipeline's work without Beam."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as staging:
        started = time.perf_counter()
        with multiprocessing.Pool(initializer=_start_inspect, initargs=(staging, size)) as pool:
            pool.map(_inspect_one, files, chunksize=64)
        return len(files) / (time.perf_counter() - started)


def _ingest_in_child(source: Path, out: Path, size: int, results: multiprocessing.Queue) -> None:
    """One timed ingest run with default settings; puts (images/s, peak RSS) on `results`."""
    from components.ingest.core import IngestConfig
    from components.ingest.pipeline import run

    started = time.perf_counter()
    with PeakMemory() as memory:
        summary = run(str(source), str(out), IngestConfig(image_size=size))
    elapsed = time.perf_counter() - started
    assert summary.seen == summary.accepted + summary.rejected + summary.duplicates
    results.put((summary.seen / elapsed, memory.peak))


def ingest_rate(source: Path, out: Path, size: int) -> tuple[float, int]:
    """(images/s, peak RSS bytes) of the ingest pipeline with default runner settings, run
    in a fresh process: the local runner tunes glibc's malloc for itself and its workers,
    and the decode pools forked from this process must not inherit that."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_ingest_in_child, args=(source, out, size, results))
    child.start()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"the ingest run failed (exit code {child.exitcode}), see above")
    rate, peak = results.get()
    return rate, peak


def main() -> None:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workdir", default=str(ROOT / ".cache" / "bench-tag"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    gallery = make_gallery(workdir / "gallery", args.images)
    files = [gallery / f"{i:07d}.jpg" for i in range(args.images)]
    small_source = labelled_subset(gallery, args.small, workdir / f"labelled-{args.small}")
    large_source = labelled_subset(gallery, args.images, workdir / f"labelled-{args.images}")

    for path in files:  # page cache warm for every measurement, not just the later ones
        path.read_bytes()
    small_rate, small_peak = ingest_rate(small_source, workdir / "ingest-s", args.image_size)
    full_before = decode_rate(files, None)
    large_rate, large_peak = ingest_rate(large_source, workdir / "ingest-l", args.image_size)
    full_after = decode_rate(files, None)
    full = (full_before + full_after) / 2
    draft = decode_rate(files, args.image_size)
    work = inspect_rate(files, args.image_size, workdir / "inspect-scratch")

    print(f"command: {' '.join(sys.argv)}")
    print(f"{args.images} JPEGs of 1024x768 -> {args.image_size} px, {os.cpu_count()} cores")
    rows = [
        ("decode only, Pillow full size, before ingest", f"{full_before:.1f} images/s"),
        ("decode only, Pillow full size, after ingest", f"{full_after:.1f} images/s"),
        ("decode only, Pillow reduced scale (draft)", f"{draft:.1f} images/s"),
        (f"ingest pipeline ({args.images} images)", f"{large_rate:.1f} images/s"),
        (f"ingest pipeline ({args.small} images)", f"{small_rate:.1f} images/s"),
        ("ratio ingest / full decode, mean (goal >= 0.7)", f"{large_rate / full:.3f}"),
        ("ratio ingest / reduced-scale decode", f"{large_rate / draft:.3f}"),
        ("ingest work alone (process pool, no Beam)", f"{work:.1f} images/s"),
        ("ratio ingest work alone / full decode", f"{work / full:.3f}"),
        ("ratio ingest pipeline / work alone (Beam share)", f"{large_rate / work:.3f}"),
        (f"peak RSS at {args.small} images", f"{small_peak / 2**20:.0f} MiB"),
        (f"peak RSS at {args.images} images", f"{large_peak / 2**20:.0f} MiB"),
        ("memory ratio large / small (goal <= 1.2)", f"{large_peak / small_peak:.2f}"),
    ]
    for name, value in rows:
        print(f"  {name:<50} {value}")


if __name__ == "__main__":
    main()
