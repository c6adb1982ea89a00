"""Proof that training really averages gradients across Horovod workers.

Two ranks fed different data must end with identical weights, equal to one process trained
on the union of both batches; with averaging switched off the same check must fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"
SCRIPT = [sys.executable, "-m", "tests.horovod_average_check"]


def _run(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"w{i}"] for i in range(len(data.files))]


def _max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights after the same training done three ways."""
    out = tmp_path_factory.mktemp("hvd")
    horovod = [str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo"]
    _run([*horovod, *SCRIPT, "--mode", "average", "--out", str(out)])
    _run([*horovod, *SCRIPT, "--mode", "no-average", "--out", str(out)])
    _run([*SCRIPT, "--mode", "union", "--out", str(out)])
    return out


def test_two_ranks_match_one_process_on_the_union(trained: Path) -> None:
    """Averaged gradients: both ranks identical and equal to the union-batch run."""
    rank0 = _weights(trained / "average-rank0.npz")
    rank1 = _weights(trained / "average-rank1.npz")
    union = _weights(trained / "union-rank0.npz")
    assert _max_difference(rank0, rank1) < 1e-6
    assert _max_difference(rank0, union) < 1e-5


def test_without_averaging_the_check_fails(trained: Path) -> None:
    """Control: the same comparison detects training without the allreduce."""
    rank0 = _weights(trained / "no-average-rank0.npz")
    rank1 = _weights(trained / "no-average-rank1.npz")
    union = _weights(trained / "union-rank0.npz")
    assert _max_difference(rank0, rank1) > 1e-3
    assert _max_difference(rank0, union) > 1e-3
