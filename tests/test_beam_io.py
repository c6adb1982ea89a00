"""Beam plumbing shared by the pipelines: the local runner's malloc tuning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHOW_MALLOC_SETTINGS = """
from components.common import beam_io
import os
beam_io.release_freed_memory()
print(os.environ["MALLOC_TRIM_THRESHOLD_"], os.environ["MALLOC_MMAP_THRESHOLD_"])
"""


def _malloc_settings(**environment: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", SHOW_MALLOC_SETTINGS],
        cwd=ROOT,
        env={**clean, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_workers_inherit_trim_and_mmap_thresholds_and_user_values_win() -> None:
    """Both glibc thresholds are set together (the trim one alone pins mmap at 128 KiB,
    which made decoding ~25% slower), and a value the user exported is kept."""
    assert _malloc_settings() == ["65536", str(4 * 1024 * 1024)]
    assert _malloc_settings(MALLOC_MMAP_THRESHOLD_="1048576") == ["65536", "1048576"]
