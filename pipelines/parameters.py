"""KFP pipeline parameters derived from the steps' declared configs.

A pipeline is written as `body(params)` over a dict of pipeline channels; `declared_pipeline`
gives it a signature with one parameter per declared option (name, type, default, and the
help as the parameter's description), so the KFP UI, `--param KEY=VALUE` and the run file
all use the declaration's names. Each step receives its section as one dict parameter and
rebuilds the typed config with `settings.from_mapping`, which also parses the text KFP's
placeholders turn numbers into.

KFP parameters cannot be None: an optional option's "not set" is -1 for numbers and "" for
text here, and `config_from_kfp` maps it back.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kfp import dsl

from components.common.settings import Setting, from_mapping, kfp_parameters, setting

# One image for every step; pin it by digest in production (see docs/operations.md). Defined
# here, not in components.py, because the steps import this module inside KFP's executor.
IMAGE = os.environ.get("GALLERYTAG_IMAGE", "ghcr.io/gallerytag/gallerytag-python:0.1.0")
KFP_TYPES = {int: int, float: float, str: str, bool: bool, tuple: list, dict: dict}
UNSET_NUMBER = -1.0


@dataclass(frozen=True)
class ClusterConfig:
    """Where the pipeline's steps find MLflow, and how training runs on the cluster."""

    launcher: str = setting(
        "mpijob",
        "mpijob: an MPIJob on the cluster (mpi-operator); local: horovodrun in the step's pod.",
        choices=("mpijob", "local"),
    )
    tracking_uri: str = setting(
        "http://mlflow.gallerytag.svc.cluster.local:5000", "MLflow server the steps log to."
    )
    mpijob_image: str = setting(IMAGE, "Image of the MPIJob's launcher and workers.")
    gpus_per_worker: int = setting(1, "GPUs per MPIJob worker pod (0: CPU training).", minimum=0)
    checkpoint_root: str = setting(
        "", "gs:// folder under which each MPIJob keeps its checkpoints (required for mpijob)."
    )
    mpijob_options: dict = setting(  # noqa: RUF009 (setting() makes a default_factory field)
        {}, "Further MPIJobConfig fields: node_selector, tolerations, cpu_request, ..."
    )


def kfp_default(item: Setting) -> Any:
    """The pipeline parameter's default (None has no KFP form)."""
    if item.default is None:
        return "" if item.base_type is str else UNSET_NUMBER
    return list(item.default) if isinstance(item.default, tuple) else item.default


def kfp_help(item: Setting) -> str:
    """The parameter's description: the declared help (+ how "not set" is written)."""
    if item.optional:
        unset = '""' if item.base_type is str else "-1"
        return f"{item.help} ({unset}: not set)"
    return item.help


def config_from_kfp(cls: type, values: dict[str, Any], where: str) -> Any:
    """A typed config from a step's section dict; the KFP "not set" values become None."""
    from components.common.settings import settings_of

    cleaned = dict(values)
    for item in settings_of(cls):
        value = cleaned.get(item.name)
        if not item.optional or value is None:
            continue
        unset = value == "" if item.base_type is str else float(value) < 0
        if unset:
            cleaned[item.name] = None
    return from_mapping(cls, cleaned, where)


def declared_pipeline(
    name: str,
    description: str,
    sections: Iterable[tuple[type, Iterable[str]]],
    leading: Iterable[tuple[str, type, Any, str]] = (),
) -> Callable[[Callable[[dict[str, Any]], None]], Any]:
    """A @dsl.pipeline whose parameters are `leading` (name, type, default or
    inspect.Parameter.empty, help) and then every declared kfp option of `sections`."""
    items = kfp_parameters(sections)

    def decorate(body: Callable[[dict[str, Any]], None]) -> Any:
        parameters = [
            inspect.Parameter(
                param, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind
            )
            for param, kind, default, _ in leading
        ]
        parameters += [
            inspect.Parameter(
                item.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=kfp_default(item),
                annotation=KFP_TYPES[item.base_type],
            )
            for item in items
        ]
        names = [parameter.name for parameter in parameters]

        def pipeline_function(*values: Any) -> None:
            body(dict(zip(names, values, strict=True)))

        helps = [(param, text) for param, _, _, text in leading]
        helps += [(item.name, kfp_help(item)) for item in items]
        pipeline_function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        pipeline_function.__name__ = name.replace("-", "_")
        pipeline_function.__doc__ = "\n".join(
            [description, "", "Args:", *(f"    {param}: {text}" for param, text in helps)]
        )
        return dsl.pipeline(name=name, description=description)(pipeline_function)

    return decorate


def section(params: dict[str, Any], cls: type, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The channels of `cls`'s declared kfp options: one step's config dict."""
    return {item.name: params[item.name] for item in kfp_parameters([(cls, exclude)])}
