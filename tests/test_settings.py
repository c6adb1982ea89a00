"""One declaration per option: the CLI, the run file's schema and the KFP parameters expose
every declared field with the declaration's name, default and help; typos are errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from components.common.beam_cli import split_beam_args
from components.common.settings import ConfigError, settings_of
from components.evaluate.cli import evaluate, promote
from components.evaluate.config import EvaluateConfig, GateConfig, SuspectConfig
from components.ingest.cli import ingest
from components.ingest.core import IngestConfig
from components.tag.cli import tag
from components.tag.config import TagConfig, TagOutputs
from components.train.cli import train
from components.train.config import TrainConfig
from gallerytag import runfile
from gallerytag.demo import EXAMPLE_RUN_FILE
from gallerytag.run import run_command

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    (ingest, [IngestConfig]),
    (train, [TrainConfig]),
    (evaluate, [EvaluateConfig, SuspectConfig]),
    (promote, [GateConfig]),
    (tag, [TagConfig, TagOutputs]),
]


def cli_defaults(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("command", "classes"), COMMANDS, ids=[c.name for c, _ in COMMANDS])
def test_every_declared_field_is_an_option_of_its_command(command, classes) -> None:
    options = {param.name: param for param in command.params if isinstance(param, click.Option)}
    for cls in classes:
        for item in settings_of(cls):
            option = options.get(item.name)
            assert option is not None, f"{command.name}: no option for {cls.__name__}.{item.name}"
            assert item.flag in option.opts, (command.name, item.name, option.opts)
            assert option.help == item.help
            if item.base_type is dict:
                assert option.multiple
            else:
                assert cli_defaults(option.default) == cli_defaults(item.default), item.name
            if item.choices:
                assert tuple(option.type.choices) == item.choices


def test_the_run_file_schema_is_the_declaration() -> None:
    schema = runfile.schema()
    for section, classes in runfile.SECTIONS.items():
        properties = schema["properties"][section]["properties"]
        declared = [item for cls in classes for item in settings_of(cls)]
        assert list(properties) == [item.name for item in declared]
        for item in declared:
            assert properties[item.name]["description"] == item.help
            assert properties[item.name]["default"] == cli_defaults(item.default)
    assert schema["properties"]["train"]["additionalProperties"] is False


def test_the_run_command_takes_every_option_as_an_override() -> None:
    flags = {opt for param in run_command.params for opt in getattr(param, "opts", [])}
    for item in runfile.all_settings().values():
        assert item.flag in flags, item.name


def compiled_parameters(tmp_path: Path) -> dict[str, dict]:
    from pipelines.cli import compile_all

    found = {}
    for name, path in compile_all(str(tmp_path)).items():
        found[name] = yaml.safe_load(path.read_text())["root"]["inputDefinitions"]["parameters"]
    return found


def test_kfp_parameters_are_the_declaration(tmp_path: Path) -> None:
    from pipelines import tagging, training
    from pipelines.parameters import kfp_default

    compiled = compiled_parameters(tmp_path)
    for name, module in (("training", training), ("tagging", tagging)):
        declared = {
            item.name: item
            for cls, exclude in module.SECTIONS
            for item in settings_of(cls, exclude)
            if item.kfp
        }
        parameters = compiled[name]
        for key, item in declared.items():
            assert key in parameters, f"{name} pipeline lacks {key}"
            assert parameters[key]["description"].startswith(item.help), key
            assert parameters[key].get("defaultValue") == kfp_default(item), key
    # The gate's significance test is a pipeline parameter like any other gate option.
    assert "max_p_value" in compiled["training"]
    assert compiled["training"]["source"].get("isOptional") is not True


def test_mpijob_builder_imports_no_cli_module() -> None:
    code = (
        "import sys; import components.train.mpijob, components.train.kubernetes; "
        "print(sorted(m for m in sys.modules if m.endswith('.cli') or m == 'click'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]", found.stdout


def gallerytag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gallerytag", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_option_typo_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    done = gallerytag("tag", str(tmp_path), "--model", "m", "--out", "o", "--min-scor", "0.9")
    assert done.returncode == 2
    assert "No such option '--min-scor'" in done.stderr
    assert "Did you mean" in done.stderr and "'--min-score'" in done.stderr


def test_version_and_short_help_on_every_command() -> None:
    from importlib.metadata import version

    expected = f"gallerytag {version('gallerytag')}"
    assert gallerytag("--version").stdout.strip() == expected
    assert gallerytag("tag", "--version").stdout.strip() == expected
    assert gallerytag("train", "-h").stdout.startswith("Usage: gallerytag train")


def test_beam_options_are_set_aside_and_the_rest_is_ours() -> None:
    own = {"--model", "--min-score"}
    mine, beam = split_beam_args(
        ["src", "--runner", "DirectRunner", "--min-score", "0.9", "--streaming",
         "--project=p", "--", "--anything", "x"],
        own,
    )  # fmt: skip
    assert mine == ["src", "--min-score", "0.9"]
    assert beam == ["--runner", "DirectRunner", "--streaming", "--project=p", "--anything", "x"]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_run_file_typo_names_the_key_the_section_and_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "g.yaml", "train:\n  finetune_epoch: 3\n")
    with pytest.raises(ConfigError) as caught:
        runfile.load(bad)
    message = str(caught.value)
    assert bad in message and "'finetune_epoch'" in message and "'train'" in message
    assert "did you mean 'finetune_epochs'?" in message
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        runfile.load(write(tmp_path / "s.yaml", "trian: {}\n"))
    with pytest.raises(ConfigError, match="workers must be int"):
        runfile.load(write(tmp_path / "t.yaml", "train:\n  workers: two\n"))
    with pytest.raises(ConfigError, match="schedule must be one of"):
        runfile.load(write(tmp_path / "c.yaml", "train:\n  schedule: linear\n"))
    done = gallerytag("run", write(tmp_path / "cli.yaml", "tag:\n  min_scor: 0.9\n"))
    assert done.returncode == 2 and "cli.yaml" in done.stderr and "min_scor" in done.stderr


def test_flags_override_the_file_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    file = write(tmp_path / "g.yaml", "run:\n  source: photos\ntrain:\n  workers: 3\n")
    merged = runfile.load(file, {"workers": 5, "split_ratios": "80/10/10"})
    assert merged.train.workers == 5
    assert merged.ingest.split_ratios == pytest.approx((0.8, 0.1, 0.1))
    assert merged.run.source == (tmp_path / "photos").as_posix()
    done = gallerytag("run", file, "--print-config", "--finetune-epochs", "7")
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["train"]["finetune_epochs"] == 7 and printed["train"]["workers"] == 3


def test_the_example_run_file_is_valid() -> None:
    config = runfile.load(str(EXAMPLE_RUN_FILE))
    assert config.train.workers == 2 and config.promote.alias == "champion"
    text = EXAMPLE_RUN_FILE.read_text()
    assert text.count("#") > 20  # commented for a first-time reader


def test_a_run_file_becomes_pipeline_parameters(tmp_path: Path) -> None:
    from pipelines.cli import pipeline_parameters, run_file_params

    training = run_file_params(str(EXAMPLE_RUN_FILE), "training")
    assert set(training) <= set(pipeline_parameters("training"))
    assert training["workers"] == 2 and training["max_p_value"] == 0.05
    assert training["source"] == (EXAMPLE_RUN_FILE.parent / "gallery").as_posix()
    tagging = run_file_params(str(EXAMPLE_RUN_FILE), "tagging")
    assert tagging["source"].endswith("/inbox") and "out" not in tagging  # out stays required
    assert "workers" not in tagging
