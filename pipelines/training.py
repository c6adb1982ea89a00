"""The training pipeline: fingerprint -> ingest (cached by the fingerprint) -> Horovod
training -> evaluation -> gate -> promotion only if the gate passed. Wiring only: the
parameters are the steps' declared options (pipelines/parameters.py)."""

import inspect
from typing import Any

from kfp import dsl

from components.evaluate.config import EvaluateConfig, GateConfig, SuspectConfig
from components.ingest.core import IngestConfig
from components.train.config import TrainConfig
from gallerytag.runfile import RunTarget
from pipelines import components
from pipelines.parameters import ClusterConfig, declared_pipeline, section

REQUIRED = inspect.Parameter.empty
SECTIONS = [
    (RunTarget, ("source", "tag_source")),
    (ClusterConfig, ()),
    (IngestConfig, ()),
    (TrainConfig, ()),
    (EvaluateConfig, ()),
    (SuspectConfig, ()),
    (GateConfig, ()),
]


@declared_pipeline(
    name="gallerytag-training",
    description="Ingest a labelled gallery, fine-tune with Horovod, evaluate, and promote the "
    "model to the registry alias only when it beats the current champion.",
    sections=SECTIONS,
    leading=[
        (
            "source",
            str,
            inspect.Parameter.empty,
            "Labelled gallery: a folder per label or a manifest.",
        )
    ],
)
def training_pipeline(params: dict[str, Any]) -> None:
    """Train a tagger and promote it if it is really better."""
    source, corrections = params["source"], params["corrections"]
    tracking_uri = params["tracking_uri"]
    fingerprint = components.fingerprint_source(source=source, corrections=corrections)
    fingerprint.set_caching_options(False)  # must look at the source every time
    ingested = components.ingest(
        source=source,
        corrections=corrections,
        fingerprint=fingerprint.output,
        ingest_config=section(params, IngestConfig),
    )
    ingested.set_caching_options(True)  # same fingerprint and options: reuse the dataset
    dataset = ingested.outputs["dataset"]
    trained = components.train(
        dataset=dataset,
        train_config=section(params, TrainConfig),
        cluster=section(params, ClusterConfig),
    )
    trained.set_caching_options(False)
    candidate = {"model_uri": trained.output, "dataset": dataset, "tracking_uri": tracking_uri}
    evaluated = components.evaluate(
        **candidate,
        evaluate_config=section(params, EvaluateConfig),
        suspect_config=section(params, SuspectConfig),
    )
    evaluated.set_caching_options(False)
    verdict = components.gate(**candidate, gate_config=section(params, GateConfig)).after(evaluated)
    verdict.set_caching_options(False)
    with dsl.If(verdict.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
        promoted = components.promote(
            model_uri=trained.output, tracking_uri=tracking_uri, alias=params["alias"]
        )
        promoted.set_caching_options(False)
