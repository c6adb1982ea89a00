"""The `gallerytag` command: one sub-command per pipeline step, plus the demo."""

from __future__ import annotations

import logging
import os
import signal
import sys

# Quiet TensorFlow's C++ start-up chatter and MLflow's download bars before they load.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import click

from components.evaluate.cli import evaluate, promote
from components.ingest.cli import ingest
from components.review.cli import review
from components.tag.cli import tag
from components.train.cli import train
from gallerytag.demo import demo
from gallerytag.run import run_command
from pipelines.cli import pipeline

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="gallerytag", message="gallerytag %(version)s")
@click.option(
    "-v", "--verbose", is_flag=True,
    help="Log at INFO level; show the workers' logs and TensorFlow's start-up lines.",
)  # fmt: skip
def cli(verbose: bool) -> None:
    """Ingest, train, evaluate and tag image galleries."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verbose:  # child processes (training ranks) show their logs too
        os.environ["GALLERYTAG_VERBOSE"] = "1"
    else:
        # Beam's local runner relays every worker's start-up warnings; they are not ours.
        logging.getLogger("apache_beam").setLevel(logging.ERROR)


for command in (ingest, train, evaluate, promote, tag, review, demo, pipeline, run_command):
    # -h and --version on every command, not only on `gallerytag` itself.
    command.context_settings = {**CONTEXT, **command.context_settings}
    click.version_option(package_name="gallerytag", message="gallerytag %(version)s")(command)
    cli.add_command(command)


def exit_on_sigterm() -> None:
    """Turn SIGTERM (what `timeout`, Kubernetes and systemd send) into SystemExit(143), so
    clean-up runs: the embedded MLflow server stops and output claims are released."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def asks_verbose(argv: list[str]) -> bool:
    """Whether the group's -v/--verbose is among the options before the sub-command."""
    for arg in argv:
        if not arg.startswith("-"):
            return False
        if arg in ("-v", "--verbose"):
            return True
    return False


def main() -> None:
    """Console-script entry point; turns expected failures into one clear line."""
    from components.common.dataset import DatasetError
    from components.common.progress import hide_native_chatter
    from components.common.tracking import TrackingUnavailable

    exit_on_sigterm()
    if not asks_verbose(sys.argv[1:]):
        hide_native_chatter()  # before any child process starts and inherits stderr
    try:
        cli(prog_name="gallerytag", standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    except (DatasetError, TrackingUnavailable, FileNotFoundError, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None
    except RuntimeError as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None
