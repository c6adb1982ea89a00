"""Benchmark: tagging peak memory at 10k vs 100k input files, measured in one run.

The 100k input reuses bench/ingest_memory.py's variants (each gallery photo written five
times with a different trailer after the JPEG end marker, so every file is distinct and is
read, hashed, decoded and predicted on its own). Prints peak RSS of the whole process tree and
images/s of the real tagging pipeline (default runner settings, all cores).
Usage: .venv/bin/python bench/tag_memory.py [--small 10000] [--base 20000] [--copies 5]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.gallery import make_gallery, subset  # noqa: E402
from bench.ingest_memory import variant_source  # noqa: E402
from bench.tag import build_tagger, pipeline  # noqa: E402


def main() -> None:
    """Build the inputs, tag both, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=10000)
    parser.add_argument("--base", type=int, default=20000)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workdir", default=str(ROOT / ".cache" / "bench-tag"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    gallery = make_gallery(workdir / "gallery", args.base)
    small = subset(gallery, args.small, workdir / f"subset-{args.small}")
    large = variant_source(gallery, args.base, args.copies, workdir / "variants")
    tagger = build_tagger(workdir)
    small_rate, small_peak = pipeline(tagger, small, workdir / "tagmem-s", args.batch)
    large_rate, large_peak = pipeline(tagger, large, workdir / "tagmem-l", args.batch)
    large_count = args.base * args.copies
    print(f"command: {' '.join(sys.argv)}")
    rows = [
        (f"tag {args.small} files", f"{small_rate:.1f} images/s"),
        (f"tag {large_count} files", f"{large_rate:.1f} images/s"),
        (f"peak RSS at {args.small} files", f"{small_peak / 2**20:.0f} MiB"),
        (f"peak RSS at {large_count} files", f"{large_peak / 2**20:.0f} MiB"),
        ("memory ratio large / small (goal <= 1.2)", f"{large_peak / small_peak:.2f}"),
    ]
    for name, value in rows:
        print(f"  {name:<45} {value}")


if __name__ == "__main__":
    main()
