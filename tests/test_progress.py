"""Live progress: plain periodic lines with counts off a terminal, a tqdm bar on one (a pty),
fed by a running Beam pipeline's counters, by evaluation batches and by training rank 0."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics

from components.common import beam_io, beam_progress, progress
from tests.conftest import jpeg_bytes, pattern_image, save_mlflow_tagger

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^[\w ]+: (?P<done>\d+)(?:/(?P<total>\d+))? \w+, [\d.]+ \w+/s")


class SlowCount(beam.DoFn):
    """Counts each element, slowly enough that a run lasts a few seconds."""

    def process(self, item: int):
        time.sleep(0.03)
        Metrics.counter("test", "done").inc()
        yield item


def listed(count: int):
    """The listing step: emits `count` items and counts them (the progress total)."""
    for item in range(count):
        Metrics.counter("test", "listed").inc()
        yield item


def counts(text: str) -> list[tuple[int, int | None]]:
    """(done, total) of every progress line in `text`."""
    found = []
    for line in text.splitlines():
        if match := LINE.match(line.strip()):
            total = match["total"]
            found.append((int(match["done"]), int(total) if total else None))
    return found


def chatter(text: str) -> list[str]:
    """TensorFlow's native start-up lines in `text`."""
    return [line for line in text.splitlines() if progress.NATIVE_CHATTER.match(line)]


def test_plain_lines_follow_a_running_pipelines_counters(monkeypatch) -> None:
    """Off a terminal, a local multi-worker run prints lines whose counts come from the
    pipeline's counters while it runs (not only at the end), with the listed total."""
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.2")
    stream = io.StringIO()
    pipeline = beam_io.new_pipeline(["--direct_running_mode=multi_threading"])
    _ = (
        pipeline
        | beam.Create([120])
        | beam.FlatMap(listed)
        | beam.Reshuffle()
        | beam.ParDo(SlowCount())
    )
    shown = progress.Progress("test", "items", stream=stream)
    beam_progress.run_pipeline(pipeline, shown, ("test", "done"), ("test", "listed"))
    lines = counts(stream.getvalue())
    assert len(lines) >= 3, stream.getvalue()
    assert all(total == 120 for _, total in lines), lines
    done = [d for d, _ in lines]
    assert done == sorted(done) and any(0 < d < 120 for d in done), lines
    assert "ETA" in stream.getvalue()
    assert "\r" not in stream.getvalue()  # plain lines, no bar


def open_terminal() -> tuple[int, int]:
    """A pty (leader, follower) sized like a terminal window (a new pty has 0 columns)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    return leader, follower


def test_a_terminal_gets_a_bar() -> None:
    """On a pty the same Progress draws a tqdm bar (percent, rate, postfix) in place."""
    leader, follower = open_terminal()
    with os.fdopen(follower, "w", buffering=1) as terminal:
        shown = progress.Progress("train", "images", total=200, stream=terminal)
        for done in range(0, 201, 40):
            shown.update(done, 200, "epoch 1/2")
            time.sleep(0.05)
        shown.close()
        output = _read_all(leader)
    os.close(leader)
    assert "\r" in output and "100%" in output and "200/200" in output, output
    assert "epoch 1/2" in output and "images/s" in output


def _read_all(fd: int, timeout_s: float = 5.0) -> str:
    """Everything readable from a pty leader until it is quiet."""
    chunks = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the follower side was closed: everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def tag_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """400 images and a tiny local MLflow tagger."""
    root = tmp_path_factory.mktemp("progress")
    inbox = root / "inbox"
    inbox.mkdir()
    for index in range(400):
        pixels = pattern_image(index % 3, seed=index, size=48)
        (inbox / f"img_{index:03d}.jpg").write_bytes(jpeg_bytes(pixels))
    return {"inbox": inbox, "model": save_mlflow_tagger(root / "model", ["a", "b", "c"])}


def _tag_command(inputs: dict[str, Path], out: Path) -> list[str]:
    return [
        sys.executable, "-c", "from gallerytag.cli import main; main()", "tag",
        str(inputs["inbox"]),
        "--model", str(inputs["model"]), "--out", str(out), "--min-score", "0.5",
    ]  # fmt: skip


def _env(tracking_env: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GALLERYTAG_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": tracking_env,
        progress.INTERVAL_ENV: "0.05",  # counters are read as often: a 400-image run takes seconds
    }


@pytest.mark.slow
def test_tag_off_a_terminal_prints_periodic_counts(tag_inputs, tracking_env, tmp_path) -> None:
    """`gallerytag tag` with stderr in a file: periodic `tag: N/400 images, R images/s`
    lines while it runs, and none of TensorFlow's native start-up lines."""
    completed = subprocess.run(
        _tag_command(tag_inputs, tmp_path / "out"), cwd=ROOT, env=_env(tracking_env, tmp_path),
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    lines = counts(completed.stderr)
    assert len(lines) >= 2 and {total for _, total in lines} == {400}, completed.stderr
    assert [d for d, _ in lines] == sorted(d for d, _ in lines)
    assert "seen 400" in completed.stdout
    assert "absl::InitializeLog" not in completed.stderr and not chatter(completed.stderr)


@pytest.mark.slow
def test_tag_on_a_terminal_draws_a_bar(tag_inputs, tracking_env, tmp_path) -> None:
    """The same command with its stderr on a pty draws the tqdm bar there."""
    leader, follower = open_terminal()
    process = subprocess.Popen(
        _tag_command(tag_inputs, tmp_path / "out"), cwd=ROOT, env=_env(tracking_env, tmp_path),
        stdout=subprocess.PIPE, stderr=follower, text=True,
    )  # fmt: skip
    os.close(follower)
    output = []
    while process.poll() is None:
        output.append(_read_all(leader, timeout_s=1.0))
    output.append(_read_all(leader))
    os.close(leader)
    text = "".join(output)
    assert process.wait() == 0, text
    assert "seen 400" in process.stdout.read()
    assert "\r" in text and "tag:" in text and "/400" in text and "images/s" in text, text


@pytest.mark.slow
def test_training_shows_rank_0_progress_without_rank_prefixes(tracking_env, tmp_path) -> None:
    """`gallerytag train --workers 2` off a terminal: periodic `train: N/M images` lines
    from rank 0's steps, its epoch lines without horovodrun's `[0]<stdout>:` prefix, and
    none of the ranks' logs or TensorFlow's start-up lines."""
    from components.ingest.core import IngestConfig
    from components.ingest.pipeline import run as ingest
    from tests.conftest import write_pattern_gallery

    gallery = write_pattern_gallery(tmp_path / "gallery", 24, ("horizontal", "square", "vertical"))
    data = str(tmp_path / "dataset")
    ingest(str(gallery), data, IngestConfig(image_size=48), ["--direct_running_mode=in_memory"])
    command = [
        sys.executable, "-c", "from gallerytag.cli import main; main()", "train",
        "--data", data, "--workers", "2", "--batch-size", "4", "--head-epochs", "1",
        "--finetune-epochs", "1", "--experiment", "progress", "--registered-model", "progress",
        "--checkpoint-dir", str(tmp_path / "ckpt"),
    ]  # fmt: skip
    completed = subprocess.run(
        command, cwd=ROOT, env=_env(tracking_env, tmp_path), capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    both = completed.stdout + completed.stderr
    assert completed.returncode == 0, both
    assert "<stdout>:" not in both and "<stderr>:" not in both, both
    assert re.search(r"^epoch 1 \(head\): loss=", completed.stdout, re.M), completed.stdout
    assert "training finished" in completed.stdout
    lines = [line for line in completed.stderr.splitlines() if line.startswith("train: ")]
    assert lines and all(LINE.match(line) for line in lines), completed.stderr
    assert re.search(r"\(epoch [12]/2\)", completed.stderr)
    assert not chatter(both) and not re.search(r"^(INFO|WARNING) ", both, re.M), both


def test_evaluation_reports_images_predicted(monkeypatch) -> None:
    """evaluate's prediction loop feeds its Progress batch by batch: lines with the images
    done of the split's size while it runs."""
    import numpy as np
    import tensorflow as tf

    from components.evaluate.scoring import predict
    from tests.test_evaluate import tiny_tagger

    monkeypatch.setenv(progress.INTERVAL_ENV, "0.05")
    model = tiny_tagger(3, size=16)
    rng = np.random.default_rng(0)

    def batches():
        for index in range(6):
            time.sleep(0.1)  # a slow reader, so that lines fall between batches
            yield {
                "image": tf.constant(rng.integers(0, 255, (8, 16, 16, 3)), tf.float32),
                "label": tf.constant(rng.integers(0, 3, 8)),
                "uri": tf.constant([f"img_{index}_{row}".encode() for row in range(8)]),
            }

    stream = io.StringIO()
    shown = progress.Progress("evaluate test", "images", total=48, stream=stream)
    found = predict(model, batches(), lambda *_: False, shown)
    assert len(found.labels) == 48
    lines = counts(stream.getvalue())
    assert len(lines) >= 3 and {total for _, total in lines} == {48}, stream.getvalue()
    assert [done for done, _ in lines] == sorted({done for done, _ in lines})
    assert stream.getvalue().startswith("evaluate test: ")


def test_a_failing_worker_shows_its_hidden_output(tmp_path, capfd) -> None:
    """The ranks' logs are hidden while training runs, but when the worker fails its last
    lines (the traceback) are printed, so the cause is not lost."""
    missing = tmp_path / "no-such-config.json"
    command = [sys.executable, "-m", "components.train.worker", "--config", str(missing)]
    stream = io.StringIO()
    code = progress.relay(command, progress.Progress("train", "images", stream=stream))
    err = capfd.readouterr().err
    assert code != 0
    assert "last output of the workers:" in err and "Traceback" in err, err
    assert str(missing) in err
