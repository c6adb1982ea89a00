"""A tagging job SIGKILLed mid-run and rerun ends with each input exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _kill_tree(process: subprocess.Popen) -> None:
    parent = psutil.Process(process.pid)
    for child in parent.children(recursive=True):
        child.kill()
    parent.kill()
    process.wait(timeout=30)


def test_killed_tagging_rerun_is_exactly_once(tmp_path: Path) -> None:
    """Kill the job once it has staged output, rerun it: one row per image, no staging left."""
    import keras

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    model.save(tmp_path / "m.keras")
    source = tmp_path / "inbox"
    source.mkdir()
    rng = np.random.default_rng(0)
    for index in range(300):
        pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        (source / f"{index:04d}.jpg").write_bytes(jpeg_bytes(pixels))
    out = tmp_path / "tags"
    code = (
        "import sys; from components.common.tracking import TaggerSpec;"
        "from components.tag.pipeline import run;"
        "spec = TaggerSpec(sys.argv[1], ['a', 'b'], 32, 'pad', False, 'm', None, '1');"
        "run(sys.argv[2], sys.argv[3], spec, beam_args=['--direct_num_workers=2'])"
    )
    args = [sys.executable, "-c", code, str(tmp_path / "m.keras"), str(source), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not any(p.is_file() for p in out.glob(".staging-*/**/*")):
        assert first.poll() is None, "the job ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _kill_tree(first)
    assert not (out / "_SUCCESS.json").exists()  # a killed run never looks complete

    second = subprocess.run(args, cwd=ROOT, env=env, stderr=subprocess.DEVNULL, timeout=300)
    assert second.returncode == 0
    rows = [json.loads(line) for shard in out.glob("tags-*.jsonl") for line in shard.open()]
    assert sorted(Path(row["uri"]).name for row in rows) == [f"{i:04d}.jpg" for i in range(300)]
    assert json.loads((out / "_SUCCESS.json").read_text())["seen"] == 300
    assert not list(out.glob(".staging-*"))


@pytest.mark.parametrize("point", ["move:0", "move:2", "marker"])
def test_killed_inside_the_commit_rerun_is_exactly_once(tmp_path: Path, point: str) -> None:
    """SIGKILL inside the commit of a rerun over a complete output: never a marker beside
    missing rows; the next run replaces everything, each image once, counts = rows."""
    import keras

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled)).save(
        tmp_path / "m.keras"
    )
    source = tmp_path / "inbox"
    source.mkdir()
    rng = np.random.default_rng(1)
    for index in range(40):
        pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        (source / f"{index:04d}.jpg").write_bytes(jpeg_bytes(pixels))
    (source / "broken.jpg").write_bytes(b"no image")
    out = tmp_path / "tags"
    arguments = json.dumps({"model_file": str(tmp_path / "m.keras"), "source": str(source),
                            "out": str(out)})  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    step = [sys.executable, "-m", "tests.kill_points"]
    quiet = {"cwd": ROOT, "env": env, "stderr": subprocess.DEVNULL, "timeout": 300}
    subprocess.run([*step, "none", "tag", arguments], check=True, **quiet)
    killed = subprocess.run([*step, point, "tag", arguments], **quiet)
    assert killed.returncode == -9  # it died at the kill point, not before
    if point != "marker":
        assert not (out / "_SUCCESS.json").exists()
    else:
        _assert_exactly_once(out, 41)  # complete, only the clean-up was cut off

    rerun = subprocess.run([*step, "none", "tag", arguments], **quiet)
    assert rerun.returncode == 0
    _assert_exactly_once(out, 41)
    assert not list(out.glob(".staging-*")) and not (out / "_CLAIM.json").exists()


def _assert_exactly_once(out: Path, images: int) -> None:
    """Each image once over the rows and rejects; _SUCCESS.json equals the rows on disk."""
    rows = [json.loads(line) for shard in out.glob("tags-*.jsonl") for line in shard.open()]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").open()]
    uris = [row["uri"] for row in rows + rejected]
    assert len(uris) == len(set(uris)) == images
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["seen"] == images
    for status in ("auto", "review"):
        assert success[status] == sum(row["status"] == status for row in rows)
    assert success["rejected"] == len(rejected)
