"""Which Beam runner the arguments choose: one reading of `--runner` for every step, local or
remote, and a refusal of the runners known to lose data."""

from __future__ import annotations

import logging

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

log = logging.getLogger(__name__)

# Runner class name -> why it is refused. Measured on a local dask.distributed cluster.
REFUSED = {
    "DaskRunner": (
        "Beam 2.77's Dask runner loses data: it drops what finish_bundle emits (the last "
        "BatchElements batch, RunInference results), computes only the last of several "
        "sinks and sends tagged outputs to every consumer"
    ),
}
# Beam's own runners that run these pipelines as written (local, or by flags on a cluster).
SUPPORTED = (
    "DirectRunner",
    "SwitchingDirectRunner",
    "BundleBasedDirectRunner",
    "FnApiRunner",
    "PrismRunner",
    "DataflowRunner",
    "FlinkRunner",
    "SparkRunner",
    "PortableRunner",
)
LOCAL = tuple(StandardOptions.LOCAL_RUNNERS)


class UnsupportedRunner(ValueError):
    """The `--runner` given is refused or unknown; the message says which and what to use."""


def _qualified(name: str) -> str:
    """Beam's own resolution of a runner name (create_runner): 'dataflow', 'DataflowRunner'
    and the module path all mean the same class."""
    known = {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}
    return known.get(name.lower(), known.get(f"{name.lower()}runner", name))


def runner_name(beam_args: list[str]) -> str | None:
    """The class name of the runner `beam_args` choose ('DataflowRunner'), or None when they
    choose none (the step then runs Beam's local FnApiRunner). Raises UnsupportedRunner for a
    runner known to lose data or a name Beam cannot resolve."""
    given = PipelineOptions(beam_args).view_as(StandardOptions).runner
    if not given:
        return None
    if not isinstance(given, str):  # a PipelineRunner instance passed in code
        return type(given).__name__
    qualified = _qualified(given)
    name = qualified.rsplit(".", 1)[-1]
    for refused, why in REFUSED.items():
        if name.lower().removesuffix("runner") == refused.lower().removesuffix("runner"):
            raise UnsupportedRunner(
                f"--runner {given} is refused: {why}. Use the default local runner "
                f"(no --runner) or one of {', '.join(SUPPORTED)}."
            )
    if "." not in qualified:
        raise UnsupportedRunner(
            f"--runner {given} is not a Beam runner; use one of {', '.join(SUPPORTED)} "
            "or the module path of a PipelineRunner class"
        )
    if name not in SUPPORTED:
        log.warning("--runner %s is not one gallerytag is built for (%s)", given, SUPPORTED)
    return name


def is_local(beam_args: list[str]) -> bool:
    """True when the pipeline runs in this machine's processes (default, Direct, FnApi,
    Prism): its workers can read local files such as the model."""
    name = runner_name(beam_args)
    return name is None or name in LOCAL
