"""Bad inputs found up front: one line on stderr, exit code 2, no traceback, no work done."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from components.common import dataset
from tests.conftest import jpeg_bytes, pattern_image, save_mlflow_tagger


def run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the `gallerytag` entry point in this process; return (exit code, stderr)."""
    from gallerytag.cli import main

    monkeypatch.setattr(sys, "argv", ["gallerytag", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line(code: int, stderr: str, message: str) -> None:
    """Exit 2 and exactly one line, containing `message`."""
    lines = [line for line in stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert code == 2 and len(lines) == 1 and message in lines[0], (code, stderr[-2000:])


@pytest.fixture
def tag_inputs(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """An inbox of two images and a small local MLflow model; MLflow on a file store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index in range(2):
        (inbox / f"{index}.jpg").write_bytes(jpeg_bytes(pattern_image(0, index)))
    return inbox, save_mlflow_tagger(tmp_path / "model", ["a", "b"])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: {**raw, "colour": "red"}, "unknown colour"),
        (lambda raw: {k: v for k, v in raw.items() if k != "labels"}, "missing labels"),
        (lambda raw: [], "holds a JSON list"),
    ],
)
def test_hand_edited_manifest_is_named(tmp_path: Path, edit, message: str) -> None:
    """An extra key, a missing key or a list instead of the manifest: DatasetError."""
    raw = json.loads(dataset.Manifest(["a"], 32, "pad", "src", {}, {}, "h").to_json())
    (tmp_path / dataset.MANIFEST_NAME).write_text(json.dumps(edit(raw)))
    with pytest.raises(dataset.DatasetError, match=message):
        dataset.read_manifest(str(tmp_path))


def test_corrupt_model_is_refused_before_the_job(tag_inputs, tmp_path, monkeypatch, capsys):
    """A damaged model.keras: one line naming it, no Beam job, no output."""
    inbox, model = tag_inputs
    keras_file = model / "data" / "model.keras"
    keras_file.write_bytes(keras_file.read_bytes()[:-500])
    out = tmp_path / "tags"
    code, stderr = run_main(["tag", str(inbox), "--model", str(model), "--out", str(out)],
                            monkeypatch, capsys)  # fmt: skip
    assert_one_line(code, stderr, f"model file {keras_file}")
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tag_inputs, tmp_path, monkeypatch, capsys) -> None:
    """--out naming an existing file: one line, exit 2."""
    inbox, model = tag_inputs
    out = tmp_path / "tags.txt"
    out.write_text("keep me")
    code, stderr = run_main(["tag", str(inbox), "--model", str(model), "--out", str(out)],
                            monkeypatch, capsys)  # fmt: skip
    assert_one_line(code, stderr, "is a file; name a folder")
    assert out.read_text() == "keep me"


def test_out_in_a_missing_bucket_is_refused(tag_inputs, gcs_bucket, monkeypatch, capsys):
    """--out gs://no-such-bucket/...: one line, exit 2."""
    inbox, model = tag_inputs
    out = f"gs://{gcs_bucket}-missing/tags"
    code, stderr = run_main(["tag", str(inbox), "--model", str(model), "--out", out],
                            monkeypatch, capsys)  # fmt: skip
    assert_one_line(code, stderr, f"bucket gs://{gcs_bucket}-missing")


def test_kfp_inputs_are_checked_before_connecting(monkeypatch, capsys) -> None:
    """Unknown parameter, unreachable host: one line each, exit 2; a bad cron is a usage
    error (click's usage lines and one error line), also before any connection."""
    dead = "http://127.0.0.1:9"
    cases = [
        (["submit", "training", "--host", dead, "--param", "sauce=x"], "no parameter sauce"),
        (["submit", "training", "--host", dead, "--param", "source=gs://b/g"], "not reachable"),
    ]
    for args, message in cases:
        code, stderr = run_main(["pipeline", *args], monkeypatch, capsys)
        assert_one_line(code, stderr, message)
    args = ["pipeline", "schedule", "tagging", "--host", dead, "--cron", "every night"]
    code, stderr = run_main(args, monkeypatch, capsys)
    assert code == 2 and "Error: Invalid value: 'every night' is not a cron" in stderr
    assert "Traceback" not in stderr and "not reachable" not in stderr


def test_evaluate_k_zero_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """--k 0 is a usage error before any model is loaded."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    args = ["evaluate", "--model", str(tmp_path / "nowhere"), "--data", str(tmp_path), "--k", "0"]
    code, stderr = run_main(args, monkeypatch, capsys)
    assert code == 2 and "Invalid value for '--k'" in stderr, stderr
