"""Benchmark: ingest peak memory at 20k vs 100k input files, measured in one run.

Generating 100k distinct 1024x768 photos takes most of an hour on 2 cores, so the large
input is built from the bench gallery (bench/gallery.py): each of the `--base` photos is
written `--copies` times with a different trailer after the JPEG end marker. Every file then
has its own SHA-256 and is read, decoded, resized, fingerprinted and staged like any other.
With the default settings the copies' equal pixels make them near duplicates, so the large
run also measures near-duplicate grouping over 100k images (one kept per photo);
`--near-duplicate-distance -1` turns grouping off and writes every file to a shard.
Prints peak RSS of the whole process tree and images/s.
Usage: .venv/bin/python bench/ingest_memory.py [--base 20000] [--copies 5]
       [--near-duplicate-distance 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.gallery import labelled_subset, make_gallery  # noqa: E402
from bench.tag import PeakMemory  # noqa: E402
from components.ingest.core import IngestConfig  # noqa: E402


def variant_source(gallery: Path, base: int, copies: int, target: Path) -> Path:
    """Class folders holding `copies` byte-distinct variants of each of `base` photos."""
    for index in range(base):
        label = ("china", "flower")[index % 2]
        folder = target / label
        folder.mkdir(parents=True, exist_ok=True)
        data = None
        for copy in range(copies):
            path = folder / f"{index:07d}-{copy}.jpg"
            if path.exists():
                continue
            data = data or (gallery / f"{index:07d}.jpg").read_bytes()
            path.write_bytes(data + f"variant {copy}".encode())
    return target


def measure(source: Path, out: Path, config: IngestConfig) -> tuple[int, float, int]:
    """(images seen, images/s, peak RSS bytes) of one ingest run."""
    from components.ingest.pipeline import run

    started = time.perf_counter()
    with PeakMemory() as memory:
        summary = run(str(source), str(out), config)
    elapsed = time.perf_counter() - started
    assert summary.seen == summary.accepted + summary.rejected + summary.duplicates
    return summary.seen, summary.seen / elapsed, memory.peak


def main() -> None:
    """Build the inputs, run both ingests, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=int, default=20000)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--near-duplicate-distance", type=int, default=10)
    parser.add_argument("--workdir", default=str(ROOT / ".cache" / "bench-tag"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    gallery = make_gallery(workdir / "gallery", args.base)
    small = labelled_subset(gallery, args.base, workdir / f"labelled-{args.base}")
    large = variant_source(gallery, args.base, args.copies, workdir / "variants")
    config = IngestConfig(
        image_size=args.image_size, near_duplicate_distance=args.near_duplicate_distance
    )
    small_seen, small_rate, small_peak = measure(small, workdir / "mem-s", config)
    large_seen, large_rate, large_peak = measure(large, workdir / "mem-l", config)
    print(f"command: {' '.join(sys.argv)}")
    rows = [
        (f"ingest {small_seen} files", f"{small_rate:.1f} images/s"),
        (f"ingest {large_seen} files", f"{large_rate:.1f} images/s"),
        (f"peak RSS at {small_seen} files", f"{small_peak / 2**20:.0f} MiB"),
        (f"peak RSS at {large_seen} files", f"{large_peak / 2**20:.0f} MiB"),
        ("memory ratio large / small (goal <= 1.2)", f"{large_peak / small_peak:.2f}"),
    ]
    for name, value in rows:
        print(f"  {name:<45} {value}")


if __name__ == "__main__":
    main()
