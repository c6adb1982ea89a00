"""One reading of `--runner` for every step: the Dask runner (loses data) refused with the
reason, Beam's local and cluster runners allowed, local vs. remote told apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.common import beam_io, runners
from components.common.runners import UnsupportedRunner

DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"


@pytest.mark.parametrize("given", [DASK, "DaskRunner", "dask", "daskrunner"])
def test_the_dask_runner_is_refused_with_the_reason(given: str) -> None:
    """Every spelling of the Dask runner is refused, naming it, why, and what to use."""
    with pytest.raises(UnsupportedRunner) as refused:
        runners.runner_name(["--runner", given])
    message = str(refused.value)
    assert f"--runner {given} is refused" in message
    assert "finish_bundle" in message and "loses data" in message
    assert "DirectRunner" in message and "DataflowRunner" in message


@pytest.mark.parametrize(
    ("args", "name", "local"),
    [
        ([], None, True),
        (["--direct_running_mode=in_memory"], None, True),
        (["--runner", "DirectRunner"], "DirectRunner", True),
        (["--runner=direct"], "DirectRunner", True),
        (["--runner", "FnApiRunner"], "FnApiRunner", True),
        (["--runner", "PrismRunner"], "PrismRunner", True),
        (["--runner", "DataflowRunner", "--project", "p"], "DataflowRunner", False),
        (["--runner", "dataflow"], "DataflowRunner", False),
        (["--runner", "FlinkRunner"], "FlinkRunner", False),
        (["--runner", "SparkRunner"], "SparkRunner", False),
        (
            ["--runner", "PortableRunner", "--job_endpoint", "localhost:8099"],
            "PortableRunner",
            False,
        ),
        (
            ["--runner", "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"],
            "DataflowRunner",
            False,
        ),
    ],
)
def test_supported_runners_are_named_and_placed(args: list[str], name, local: bool) -> None:
    """Beam's own spellings of a runner all resolve to its class name; local ones are local."""
    assert runners.runner_name(args) == name
    assert runners.is_local(args) is local


def test_a_name_beam_cannot_resolve_is_refused() -> None:
    """A typo is one clear line instead of Beam's error at pipeline construction."""
    with pytest.raises(UnsupportedRunner, match="--runner Dataflw is not a Beam runner"):
        runners.runner_name(["--runner", "Dataflw"])


def test_new_pipeline_refuses_the_dask_runner() -> None:
    """The pipeline factory both steps use refuses it too."""
    with pytest.raises(UnsupportedRunner, match="DaskRunner is refused"):
        beam_io.new_pipeline(["--runner", DASK])


def test_ingest_refuses_the_dask_runner_before_any_work(tmp_path: Path) -> None:
    """`ingest` stops at once: no claim, no output folder."""
    from components.ingest.pipeline import run as ingest

    out = tmp_path / "dataset"
    with pytest.raises(UnsupportedRunner, match="Dask runner loses data"):
        ingest(str(tmp_path), str(out), beam_args=["--runner", DASK])
    assert not out.exists()


def test_tag_cli_refuses_the_dask_runner_with_one_line(tmp_path: Path, monkeypatch, capsys):
    """`gallerytag tag ... --runner DaskRunner` exits 2 with the reason, before it loads
    (or downloads) the model."""
    import sys

    from gallerytag.cli import main

    args = ["tag", str(tmp_path), "--model", "models:/never-fetched@champion", "--out",
            str(tmp_path / "out"), "--runner", "DaskRunner"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["gallerytag", *args])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(SystemExit) as exit_info:
        main()
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert stderr.startswith("error: --runner DaskRunner is refused") and "finish_bundle" in stderr
    assert len(stderr.strip().splitlines()) == 1
