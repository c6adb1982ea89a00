"""Two `gallerytag tag` runs into one --out, started together, several times over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import jpeg_bytes, save_mlflow_tagger

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
IMAGES = 40
ROUNDS = 3


def _rows_on_disk(out: Path) -> dict[str, int]:
    """Rows per status actually in the output's tag shards and reject file."""
    counts: dict[str, int] = {}
    uris = []
    for shard in sorted(out.glob("tags-*.jsonl")):
        for line in shard.read_text().splitlines():
            row = json.loads(line)
            uris.append(row["uri"])
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    rejected = (out / "rejected.jsonl").read_text().splitlines()
    uris += [json.loads(line)["uri"] for line in rejected]
    counts["rejected"] = len(rejected)
    counts["uris"] = len(uris)
    counts["distinct"] = len(set(uris))
    return counts


def test_two_runs_into_one_out_never_lose_rows(tmp_path: Path) -> None:
    """Each run completes with every row on disk or is refused with a clear message; the
    output always has each input exactly once and _SUCCESS.json equals the rows on disk."""
    model = save_mlflow_tagger(tmp_path / "model", ["a", "b"])
    source = tmp_path / "inbox"
    source.mkdir()
    rng = np.random.default_rng(0)
    for index in range(IMAGES):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        (source / f"{index:03d}.jpg").write_bytes(jpeg_bytes(pixels))
    (source / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "tags"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
           "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri()}  # fmt: skip
    command = [sys.executable, "-c", "from gallerytag.cli import main; main()", "tag",
               str(source), "--model", str(model), "--out", str(out),
               "--direct_running_mode=in_memory"]  # fmt: skip
    completed = refused = 0
    for _ in range(ROUNDS):
        runs = [subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
        for process in runs:
            # Generous: two TF start-ups at once on 2 shared cores took >300 s under load.
            stdout, stderr = process.communicate(timeout=900)
            if process.returncode == 0:
                completed += 1
                assert f"seen {IMAGES + 1} =" in stdout
            else:
                refused += 1
                assert "is being written by another gallerytag run" in stderr, stderr[-3000:]
                assert "Traceback" not in stderr
        success = json.loads((out / "_SUCCESS.json").read_text())
        on_disk = _rows_on_disk(out)
        assert on_disk["uris"] == on_disk["distinct"] == IMAGES + 1 == success["seen"]
        for status in ("auto", "review", "rejected"):
            assert success[status] == on_disk.get(status, 0), (success, on_disk)
        assert len((out / "review.jsonl").read_text().splitlines()) == success["review"]
        assert not list(out.glob(".staging-*")) and not (out / "_CLAIM.json").exists()
    assert completed >= ROUNDS  # every round ends with one complete run at least
