"""KFP v2 components: small typed functions whose bodies call the same library code as the
CLI. KFP serialises each function's source into the pipeline YAML, so every import sits
inside the body and the container image (or the local venv) must have gallerytag installed.

`CLI_EQUIVALENT` names the `gallerytag` command that does what each component does, so an
engineer can rerun any step by hand (and a test checks those commands exist).

No `from __future__ import annotations` here: KFP reads the parameter types from the
functions' annotations at definition time.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from pipelines.parameters import IMAGE


def _component(func):
    # install_kfp_package=False: the image already has the pinned kfp; letting KFP pip-install
    # it would change the environment at run time (and, locally, the developer's venv).
    return dsl.component(func, base_image=IMAGE, install_kfp_package=False)


@_component
def fingerprint_source(source: str, corrections: str) -> str:
    """A digest of the source listing (names and sizes, or the manifest's text) and of the
    corrections files' text: the cache key of the ingest step, so unchanged galleries are not
    ingested twice and new review decisions always are."""
    from components.ingest.sources import source_fingerprint, split_locations

    return source_fingerprint(source, split_locations(corrections))


@_component
def ingest(
    source: str,
    corrections: str,
    fingerprint: str,
    ingest_config: dict,
    dataset: Output[Dataset],
) -> None:
    """Validate, dedupe, split and shard the source into a dataset artifact, with the
    decisions of the (comma-separated) corrections files winning over the source's labels."""
    from components.ingest.core import IngestConfig
    from components.ingest.pipeline import run
    from components.ingest.sources import split_locations
    from pipelines.parameters import config_from_kfp

    out = dataset.uri if dataset.uri.startswith("gs://") else dataset.path
    config = config_from_kfp(IngestConfig, ingest_config, "ingest step")
    summary = run(source, out, config, corrections=split_locations(corrections))
    dataset.metadata.update(
        {"dataset_hash": summary.dataset_hash, "fingerprint": fingerprint, "seen": summary.seen}
    )


@_component
def train(dataset: Input[Dataset], train_config: dict, cluster: dict) -> str:
    """Fine-tune with Horovod (horovodrun in this pod, or an MPIJob on the cluster); returns
    the registered model version as models:/NAME/VERSION. `cluster.mpijob_options` sets
    MPIJobConfig fields such as node_selector, tolerations, cpu_request, memory_request."""
    import dataclasses

    from components.train.config import TrainConfig
    from pipelines.parameters import ClusterConfig, config_from_kfp

    data = dataset.uri if dataset.uri.startswith("gs://") else dataset.path
    config = dataclasses.replace(
        config_from_kfp(TrainConfig, train_config, "train step"), data=data
    )
    where = config_from_kfp(ClusterConfig, cluster, "train step")
    if where.launcher == "local":
        from components.train.launcher import train as run_training

        result = run_training(config, where.tracking_uri)
        return f"models:/{result.registered_model}/{result.version}"
    from components.train.kubernetes import run_mpijob

    return run_mpijob(  # workers = pods; the MPIJob sets the ranks (pods x GPUs)
        dataclasses.replace(config, workers=1),
        where.tracking_uri,
        where.mpijob_image,
        config.workers,
        where.gpus_per_worker,
        where.checkpoint_root,
        where.mpijob_options,
    )


@_component
def evaluate(
    model_uri: str,
    dataset: Input[Dataset],
    tracking_uri: str,
    evaluate_config: dict,
    suspect_config: dict,
    report: Output[HTML],
    metrics: Output[Metrics],
) -> float:
    """Metrics, report and suspects for the candidate; returns its test top-1."""
    import dataclasses
    import os
    import shutil
    import tempfile

    from components.common.tracking import tracking
    from components.evaluate.config import EvaluateConfig, SuspectConfig
    from components.evaluate.run import REPORT_FILE, evaluate
    from pipelines.parameters import config_from_kfp

    data = dataset.uri if dataset.uri.startswith("gs://") else dataset.path
    config = dataclasses.replace(
        config_from_kfp(EvaluateConfig, evaluate_config, "evaluate step"),
        suspects=config_from_kfp(SuspectConfig, suspect_config, "evaluate step"),
    )
    out = tempfile.mkdtemp(prefix="evaluation-")
    with tracking(tracking_uri):
        result = evaluate(model_uri, data, out, config)
    shutil.copy(os.path.join(out, REPORT_FILE), report.path)
    for key, value in result.metrics.items():  # as on MLflow: probe, bf16 cost, recalls
        metrics.log_metric(key, value)
    metrics.log_metric("test_images", result.images)
    return result.top1


@_component
def gate(
    model_uri: str,
    dataset: Input[Dataset],
    tracking_uri: str,
    gate_config: dict,
    decision: Output[Artifact],
) -> bool:
    """Compare the candidate with the current champion; returns whether it may be promoted
    (the pipeline's dsl.If reads it). The alias is not touched here."""
    from components.common.tracking import tracking
    from components.evaluate.config import GateConfig
    from components.evaluate.promote import judge
    from pipelines.parameters import config_from_kfp

    data = dataset.uri if dataset.uri.startswith("gs://") else dataset.path
    config = config_from_kfp(GateConfig, gate_config, "gate step")
    with tracking(tracking_uri):
        verdict = judge(model_uri, data, config, decision_path=decision.path)
    for reason in verdict.reasons:
        print(f"gate: {reason}", flush=True)
    return verdict.promote


@_component
def promote(model_uri: str, tracking_uri: str, alias: str) -> str:
    """Point the registry alias at the candidate (runs only after a passed gate)."""
    from components.common.tracking import tracking
    from components.evaluate.promote import move_alias

    with tracking(tracking_uri):
        version = move_alias(model_uri, alias)
    return f"models:/{version.name}@{alias}"


@_component
def tag(
    source: str,
    model_uri: str,
    tracking_uri: str,
    out: str,
    tag_config: dict,
    tag_outputs: dict,
    metrics: Output[Metrics],
) -> str:
    """Tag every image under the source with the model; returns the output folder."""
    import tempfile

    from components.tag.cli import chosen_runtime, tagger_and_policy
    from components.tag.config import TagConfig, TagOutputs
    from components.tag.pipeline import run
    from pipelines.parameters import config_from_kfp

    config = config_from_kfp(TagConfig, tag_config, "tag step")
    outputs = config_from_kfp(TagOutputs, tag_outputs, "tag step")
    with tempfile.TemporaryDirectory() as tmp:
        tagger, policy = tagger_and_policy(model_uri, config, tracking_uri, tmp)
        runtime = chosen_runtime(tagger, config, tmp)
        summary = run(source, out, tagger, policy, outputs, runtime=runtime)
    for name in ("seen", "auto", "review", "rejected"):
        metrics.log_metric(name, getattr(summary, name))
    return out


CLI_EQUIVALENT = {
    "fingerprint-source": None,  # internal cache key, no user-facing command
    "ingest": ["ingest"],
    "train": ["train"],
    "evaluate": ["evaluate"],
    "gate": ["promote"],
    "promote": ["promote"],
    "tag": ["tag"],
}
