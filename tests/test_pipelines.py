"""KFP pipelines: compile and load back, component code and CLI equivalents exist, a real
local run (subprocess runner, horovodrun, MLflow registry), and a contract test of what
`submit` / `schedule` send to a KFP server."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gallerytag.cli import cli
from pipelines.cli import compile_all, kfp_cron
from pipelines.components import CLI_EQUIVALENT
from tests.conftest import CHAIN_GATE, write_pattern_gallery
from tests.kfp_contract_server import API, kfp_contract_server


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both pipelines compiled once."""
    return compile_all(str(tmp_path_factory.mktemp("compiled")))


def _executors(path: Path) -> dict[str, dict]:
    spec = yaml.safe_load(path.read_text())
    return spec["deploymentSpec"]["executors"]


def test_compiled_pipelines_load_back(compiled: dict[str, Path]) -> None:
    """The YAML is a KFP v2 pipeline spec kfp can load again, with typed parameters."""
    from kfp import components

    for name, path in compiled.items():
        loaded = components.load_component_from_file(str(path))
        assert loaded.name == f"gallerytag-{name}"
    training = yaml.safe_load(compiled["training"].read_text())
    parameters = training["root"]["inputDefinitions"]["parameters"]
    assert parameters["workers"]["parameterType"] == "NUMBER_INTEGER"
    assert parameters["source"]["parameterType"] == "STRING"
    assert parameters["corrections"]["parameterType"] == "STRING"  # optional, "" = none
    assert parameters["corrections"]["defaultValue"] == ""
    tasks = training["root"]["dag"]["tasks"]
    for step in ("fingerprint-source", "ingest"):  # both see it: new decisions bust the cache
        given = tasks[step]["inputs"]["parameters"]["corrections"]
        assert given["componentInputParameter"] == "corrections"
    assert tasks["ingest"]["cachingOptions"].get("enableCache") is True
    assert not tasks["train"]["cachingOptions"].get("enableCache")
    condition = tasks["condition-1"]["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--gate-Output'] == true"
    assert "promote" in training["components"]["comp-condition-1"]["dag"]["tasks"]


def test_every_component_command_exists(compiled: dict[str, Path]) -> None:
    """Each executor's program is on PATH, its embedded function compiles and its imports
    resolve, and the matching `gallerytag` command answers --help."""
    import ast
    import importlib

    seen = set()
    for path in compiled.values():
        for name, executor in _executors(path).items():
            container = executor["container"]
            assert shutil.which(container["command"][0]), container["command"][0]
            assert not any("pip install" in part for part in container["command"])
            source = container["command"][-1]
            tree = ast.parse(source)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in (
                    "components", "models", "pipelines", "gallerytag"
                ):  # fmt: skip
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        assert hasattr(module, alias.name), (node.module, alias.name)
            seen.add(name.removeprefix("exec-"))
    assert seen == set(CLI_EQUIVALENT)
    for command in filter(None, CLI_EQUIVALENT.values()):
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_cron_expressions() -> None:
    """Five-field cron gets KFP's seconds field; nonsense is refused."""
    assert kfp_cron("0 2 * * *") == "0 0 2 * * *"
    assert kfp_cron("0 0 2 * * *") == "0 0 2 * * *"
    with pytest.raises(Exception, match="cron"):
        kfp_cron("nightly")


def test_bad_parameters_are_named() -> None:
    """KEY=VALUE pairs parse as JSON when they can; a pair without '=' is refused by name."""
    from pipelines.cli import parse_params

    assert parse_params(("workers=4", "source=gs://b/x", 'opts={"a": 1}')) == {
        "workers": 4,
        "source": "gs://b/x",
        "opts": {"a": 1},
    }
    result = CliRunner().invoke(cli, ["pipeline", "submit", "training", "--host", "h",
                                      "--param", "workers"])  # fmt: skip
    assert result.exit_code == 2 and "'workers' is not KEY=VALUE" in result.output


def test_submit_and_schedule_contract() -> None:
    """Contract test: the requests kfp.Client sends for submit (experiment + run with the
    compiled spec and parameters) and schedule (upload + recurring run with the cron)."""
    runner = CliRunner()
    with kfp_contract_server() as (host, recorded):
        submit = runner.invoke(
            cli,
            ["pipeline", "submit", "training", "--host", host,
             "--param", "source=gs://b/gallery", "--param", "workers=4"],
        )  # fmt: skip
        assert submit.exit_code == 0, submit.output
        schedule = runner.invoke(
            cli,
            ["pipeline", "schedule", "tagging", "--host", host, "--cron", "30 1 * * *",
             "--param", "source=gs://b/inbox", "--param", "out=gs://b/tags"],
        )  # fmt: skip
        assert schedule.exit_code == 0, schedule.output
    (run,) = recorded.find("POST", f"{API}/runs")
    body = json.loads(run[3])
    assert body["experiment_id"] == "exp-1"
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "gallerytag-training"
    assert body["runtime_config"]["parameters"] == {"source": "gs://b/gallery", "workers": 4}
    assert body["service_account"] == "gallerytag-pipeline"
    (upload,) = recorded.find("POST", f"{API}/pipelines/upload")
    assert upload[2]["name"] == ["gallerytag-tagging"]
    assert b"# Name: gallerytag-tagging" in upload[3]
    (recurring,) = recorded.find("POST", f"{API}/recurringruns")
    body = json.loads(recurring[3])
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 1 * * *"
    assert body["pipeline_version_reference"] == {
        "pipeline_id": "pl-1",
        "pipeline_version_id": "ver-1",
    }
    assert body["runtime_config"]["parameters"]["out"] == "gs://b/tags"
    assert body["max_concurrency"] == 1
    assert body["service_account"] == "gallerytag-pipeline"


@pytest.mark.slow
def test_local_run_promotes_a_model(tmp_path: Path, tracking_env: str) -> None:
    """The training pipeline, end to end with KFP's local subprocess runner: ingest,
    horovodrun -np 2, evaluate, gate, promote; the champion alias is set in the registry."""
    import mlflow

    from pipelines.cli import run_local

    gallery = write_pattern_gallery(tmp_path / "gallery", 30, ("horizontal", "square", "vertical"))
    name = f"kfp-{uuid.uuid4().hex[:6]}"
    params = {
        "tracking_uri": tracking_env,
        "registered_model": name,
        "experiment": name,
        "image_size": 64,
        "head_epochs": 2,
        "finetune_epochs": 1,
        "batch_size": 8,
        "beat_probe": CHAIN_GATE.beat_probe,
    }
    run_local(str(gallery), str(tmp_path / "work"), params)
    champion = mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
    assert champion.version == "1"
    assert champion.tags["gallerytag.gate"] == "pass"
    assert list((tmp_path / "work" / "kfp").rglob("report*"))  # the HTML artifact
    # The evaluate step's KFP metrics carry the MLflow names, the probe's figure included.
    (evaluated,) = (tmp_path / "work" / "kfp").glob("*/evaluate/executor_output.json")
    logged = json.dumps(json.loads(evaluated.read_text()))
    for key in ("test_top1", "test_top1_probe", "test_top1_gain_over_probe", "test_images"):
        assert f'"{key}"' in logged, key
