"""`gallerytag run FILE` for real: the whole path from one YAML, and a rerun that skips what
is done (ingest, Horovod training, evaluation, the gate and tagging, on the real CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import jpeg_bytes, pattern_image, write_broken_files, write_pattern_gallery

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
LABELS = ("horizontal", "square", "vertical")


def gallerytag(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gallerytag", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_one_file_runs_every_step_and_a_rerun_skips_them(
    tmp_path: Path, mlflow_server: str
) -> None:
    write_pattern_gallery(tmp_path / "gallery", 30, LABELS)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index in range(9):
        (inbox / f"new_{index}.jpg").write_bytes(
            jpeg_bytes(pattern_image(index % 3, 70_000 + index))
        )
    write_broken_files(inbox)
    name = f"runfile-{uuid.uuid4().hex[:8]}"
    run_file = tmp_path / "gallery.yaml"
    run_file.write_text(
        f"""# paths are relative to this file
run:
  source: gallery
  work_dir: work
  tag_source: inbox
ingest:
  image_size: 64
train:
  registered_model: {name}
  experiment: {name}
  workers: 1
  batch_size: 8
  finetune_epochs: 1
  finetune_blocks: 2
evaluate:
  gradcam_per_class: 0
  probe: false
  score_precision: bf16
promote:
  absolute_floor: 0.0
  beat_probe: false
tag:
  shards: 1
"""
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    first = gallerytag("run", str(run_file), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    for step in ("[ingest]", "[train]", "[evaluate]", "[promote]", "[tag]"):
        assert step in first.stdout
    assert "skipped" not in first.stdout
    assert "[evaluate] test in bf16: top-1 " in first.stdout  # the run file's score_precision
    work = tmp_path / "work"
    steps = json.loads((work / "steps.json").read_text())
    assert list(steps) == ["ingest", "train", "evaluate", "promote", "tag"]
    assert steps["train"]["outputs"]["model"] == f"models:/{name}/1"
    assert steps["tag"]["outputs"]["seen"] == 12  # 9 images + 3 broken files
    assert (work / "evaluation" / "evaluation.json").exists()
    assert (work / "tags" / "_SUCCESS.json").exists()

    again = gallerytag("run", str(run_file), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("unchanged since the last run: skipped") == 5, again.stdout

    # A flag overrides the file: only the steps that depend on it run again.
    changed = gallerytag("run", str(run_file), "--target-precision", "0.9", env=env)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    for step in ("ingest", "train"):
        assert f"[{step}] unchanged since the last run: skipped" in changed.stdout
    assert "[evaluate] models:/" in changed.stdout
