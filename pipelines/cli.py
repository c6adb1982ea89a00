"""`gallerytag pipeline ...`: compile the KFP pipelines, run the training pipeline locally
(KFP's subprocess runner, no Docker, no cluster), or submit / schedule them on a KFP server."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

PIPELINES = {"training": "pipelines.training:training_pipeline",
             "tagging": "pipelines.tagging:tagging_pipeline"}  # fmt: skip
SERVICE_ACCOUNT = "gallerytag-pipeline"


def pipeline_function(name: str):
    """The @dsl.pipeline function registered under `name`."""
    import importlib

    module, _, attribute = PIPELINES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def compile_all(out_dir: str) -> dict[str, Path]:
    """Write one YAML per pipeline into `out_dir`; returns name -> file."""
    from kfp import compiler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in PIPELINES:
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(pipeline_function(name), str(path))
        written[name] = path
    return written


def kfp_cron(expression: str) -> str:
    """KFP's scheduler wants six fields (seconds first); accept the usual five as well."""
    fields = expression.split()
    if len(fields) == 5:
        return "0 " + expression
    if len(fields) == 6:
        return expression
    raise click.BadParameter(f"'{expression}' is not a cron expression of 5 or 6 fields")


def parse_params(pairs: tuple[str, ...]) -> dict[str, object]:
    """KEY=VALUE pairs; values are read as JSON when they parse (numbers, true), else text."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--param")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def run_file_params(path: str | None, name: str) -> dict[str, object]:
    """The pipeline parameters a run file sets (its sections flattened; the run section's
    source / tag_source / tag_out become the pipeline's source and out)."""
    if not path:
        return {}
    from gallerytag.runfile import load

    sections = load(path).as_sections()
    flat = {key: value for values in sections.values() for key, value in values.items()}
    target = sections["run"]
    if name == "tagging":
        flat["source"], flat["out"] = target["tag_source"], target["tag_out"]
    declared = set(pipeline_parameters(name))
    unset = {key for key in ("source", "out") if not flat.get(key)}  # required: not from here
    return {
        key: value
        for key, value in flat.items()
        if key in declared and key not in unset and value is not None
    }


def pipeline_parameters(name: str) -> list[str]:
    """The parameter names of pipeline `name`, from its (derived) signature."""
    import inspect

    return list(inspect.signature(pipeline_function(name).pipeline_func).parameters)


def run_local(source: str | None, work_dir: str, params: dict[str, object]) -> dict:
    """Run the training pipeline end to end on this machine: KFP's subprocess runner, the
    embedded MLflow server, horovodrun on localhost. Returns the tasks' outputs."""
    import kfp.local

    from components.common.tracking import tracking
    from pipelines.training import training_pipeline

    work = Path(work_dir)
    if source is None:
        from gallerytag.gallery import materialise_gallery

        materialise_gallery(work, per_class=100, inbox_size=0)
        source = str(work / "gallery")
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "kfp")
    )
    defaults = {"launcher": "local", "gpus_per_worker": 0, "image_size": 96, "workers": 2}
    with tracking(params.pop("tracking_uri", None)) as uri:
        task = training_pipeline(source=source, tracking_uri=uri, **(defaults | params))
    return {"tracking_uri": uri, "outputs": dict(task.outputs) if task.outputs else {}}


@click.group()
def pipeline() -> None:
    """Kubeflow Pipelines: compile, run locally, submit, schedule."""


@pipeline.command("compile")
@click.option("--out", "out_dir", default="build/pipelines", show_default=True)
def compile_command(out_dir: str) -> None:
    """Write training.yaml and tagging.yaml (KFP v2 IR) for upload."""
    for name, path in compile_all(out_dir).items():
        click.echo(f"{name}: {path}")


@pipeline.command("run")
@click.option("--local", "local", is_flag=True, required=True,
              help="Run with KFP's local subprocess runner (the only mode; use `submit` for a "
              "cluster).")  # fmt: skip
@click.option("--source", default=None,
              help="Labelled gallery (folder per class or manifest); default: a small demo "
              "gallery written into the work dir.")  # fmt: skip
@click.option("--work-dir", default=None, help="Where artifacts land (default: a temp dir).")
@click.option("--param", "params", multiple=True, help="Pipeline parameter KEY=VALUE.")
@click.option("--config", "run_file", default=None, type=click.Path(dir_okay=False),
              help="A run file (gallerytag run's YAML): its settings become the pipeline's "
              "parameters; --param wins over it.")  # fmt: skip
def run_command(
    local: bool, source: str | None, work_dir: str | None, params, run_file: str | None
) -> None:
    """Run the training pipeline end to end on this machine, no cluster needed."""
    work = work_dir or tempfile.mkdtemp(prefix="gallerytag-kfp-")
    arguments = run_file_params(run_file, "training") | parse_params(params)
    source = source or arguments.pop("source", None) or None
    configured = arguments.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    run_local(source, work, arguments)
    click.echo(f"pipeline finished; artifacts (dataset, report.html, decision) under {work}/kfp")
    if configured:
        click.echo(f"runs and the registry: {configured}")
    else:
        from components.common.tracking import LocalStore, gallerytag_home

        click.echo(f"browse the runs: {LocalStore(gallerytag_home()).ui_command()}")


def check_params(package: Path, name: str, arguments: dict[str, object]) -> None:
    """Refuse parameters the compiled pipeline does not declare, before any request."""
    import yaml

    declared = yaml.safe_load(package.read_text())["root"]["inputDefinitions"]["parameters"]
    unknown = sorted(set(arguments) - set(declared))
    if unknown:
        raise ValueError(
            f"pipeline {name} has no parameter {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(declared))}"
        )


def _client(host: str):
    """A kfp.Client for `host`, after checking the host answers at all (else one line)."""
    import kfp
    import requests

    try:
        requests.get(host.rstrip("/") + "/apis/v2beta1/healthz", timeout=10)
    except requests.RequestException as error:
        raise ValueError(
            f"KFP host {host} is not reachable ({type(error).__name__}); check --host / "
            "KFP_HOST and the port-forward (docs/operations.md)"
        ) from None
    return kfp.Client(host=host)


def server_run_options(command):
    """The options `submit` and `schedule` share: host, parameters, run file, account."""
    options = [
        click.option("--host", required=True, envvar="KFP_HOST", show_envvar=True,
                     help="KFP API endpoint."),
        click.option("--experiment", default="gallerytag", show_default=True),
        click.option("--param", "params", multiple=True, help="Pipeline parameter KEY=VALUE."),
        click.option("--service-account", default=SERVICE_ACCOUNT, show_default=True,
                     help="Pods run as this (k8s/base/rbac.yaml lets it start MPIJobs)."),
        click.option("--config", "run_file", default=None, type=click.Path(dir_okay=False),
                     help="A run file (gallerytag run's YAML): its settings become the "
                     "pipeline's parameters; --param wins over it."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@pipeline.command("submit")
@click.argument("name", type=click.Choice(sorted(PIPELINES)))
@click.option("--run-name", default=None)
@server_run_options
def submit_command(
    name: str,
    host: str,
    experiment: str,
    run_name: str | None,
    params,
    service_account: str,
    run_file: str | None,
) -> None:
    """Compile and start one run of a pipeline on a KFP server."""
    # A bad pair or run file fails before any request is sent.
    arguments = run_file_params(run_file, name) | parse_params(params)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_all(tmp)[name]
        check_params(package, name, arguments)
        run = _client(host).create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name or f"gallerytag-{name}",
            experiment_name=experiment,
            service_account=service_account,
        )
    click.echo(f"run {run.run_id} started")


@pipeline.command("schedule")
@click.argument("name", type=click.Choice(sorted(PIPELINES)))
@click.option("--cron", required=True, help="e.g. '0 2 * * *' (02:00 daily); 5 or 6 fields.")
@click.option("--job-name", default=None)
@server_run_options
def schedule_command(
    name: str,
    host: str,
    cron: str,
    experiment: str,
    job_name: str | None,
    params,
    service_account: str,
    run_file: str | None,
) -> None:
    """Upload a pipeline and create a recurring run on a cron schedule."""
    # A bad pair, run file or cron fails before any request is sent.
    arguments = run_file_params(run_file, name) | parse_params(params)
    cron_expression = kfp_cron(cron)
    pipeline_name = f"gallerytag-{name}"
    with tempfile.TemporaryDirectory() as tmp:
        package = str(compile_all(tmp)[name])
        check_params(Path(package), name, arguments)
        client = _client(host)
        pipeline_id = client.get_pipeline_id(pipeline_name)
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(package, pipeline_name=pipeline_name).pipeline_id
            versions = client.list_pipeline_versions(pipeline_id).pipeline_versions or []
            version_id = versions[0].pipeline_version_id if versions else None
        else:  # a new version of the existing pipeline, so older schedules keep theirs
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            version_id = client.upload_pipeline_version(
                package, pipeline_version_name=f"{pipeline_name}-{stamp}", pipeline_id=pipeline_id
            ).pipeline_version_id
    found = client.create_experiment(experiment)
    recurring = client.create_recurring_run(
        experiment_id=found.experiment_id,
        job_name=job_name or f"gallerytag-{name}-nightly",
        cron_expression=cron_expression,
        pipeline_id=pipeline_id,
        version_id=version_id,
        params=arguments,
        max_concurrency=1,
        service_account=service_account,
    )
    click.echo(f"recurring run {recurring.recurring_run_id} scheduled ({cron_expression})")
