"""MLflow lineage and naming: the ingested dataset as an MLflow dataset, run names and
source tags, and the experiment set up so the MLflow UI opens on runs.

Train (rank 0), evaluate and promote call these; nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import warnings
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

from components.common.dataset import SPLITS, Manifest

# MLflow stores a dataset digest in 36 characters (MAX_DATASET_DIGEST_SIZE): the 64-hex
# dataset hash does not fit, so the digest is its first 32 hex digits (128 bits) and the
# whole hash travels in the profile and in the `gallerytag.dataset_hash` input tag.
DIGEST_CHARS = 32
DATASET_HASH_TAG = "gallerytag.dataset_hash"
# The experiment kind the MLflow 3 UI reads (and its kind selector writes). 3.17.2's UI
# derives the kind from the browser's workflow type instead (a hard-coded feature flag), so
# the links printed by `run_url` also carry `workflowType=machine_learning`.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_QUERY = "?workflowType=machine_learning"
CHECK_TAG_PREFIX = "gallerytag.check."  # internal checks: tags, never charted as metrics


def digest_of(manifest: Manifest) -> str:
    """The MLflow dataset digest of an ingested dataset (a prefix of its dataset hash)."""
    return manifest.dataset_hash[:DIGEST_CHARS]


def dataset_name(data_dir: str) -> str:
    """A readable dataset name: the dataset folder's last path element."""
    return data_dir.rstrip("/").rsplit("/", 1)[-1] or data_dir


def profile_of(manifest: Manifest) -> dict[str, Any]:
    """What the MLflow UI shows as the dataset's profile: counts per split and per label."""
    per_split = {split: manifest.split_size(split) for split in SPLITS}
    per_label = {
        label: sum(manifest.counts.get(split, {}).get(label, 0) for split in SPLITS)
        for label in manifest.labels
    }
    return {
        "images": sum(per_split.values()),
        "splits": per_split,
        "labels": per_label,
        "counts": manifest.counts,
        "dataset_hash": manifest.dataset_hash,
        "image_size": manifest.image_size,
        "resize_mode": manifest.resize_mode,
        "source": manifest.source,
        "rejected": manifest.totals.get("rejected", 0),
        "duplicates": manifest.totals.get("duplicates", 0),
    }


class IngestedDataset(Dataset):
    """An ingested dataset folder as an MLflow dataset: metadata only, never the pixels."""

    def __init__(self, source: DatasetSource, name: str, digest: str, profile: dict) -> None:
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    def _compute_digest(self) -> str:
        raise AssertionError("the digest is always given: the manifest's dataset hash")

    @property
    def profile(self) -> dict:
        """Counts per split and label, the full hash, size and source."""
        return self._profile

    @property
    def schema(self) -> None:
        """TFRecord examples; their features are documented in docs/architecture.md."""
        return None

    def to_dict(self) -> dict[str, str]:
        """MLflow's dataset record, with the profile as JSON."""
        return super().to_dict() | {"profile": json.dumps(self._profile)}


def _source_of(data_dir: str) -> DatasetSource:
    """gs://... stays a GCS source; a local folder becomes an absolute local source."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    scheme = data_dir.split("://", 1)[0] if "://" in data_dir else ""
    uri = data_dir if scheme and scheme != "file" else os.path.abspath(data_dir.split("://")[-1])
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(uri)


def mlflow_dataset(data_dir: str, manifest: Manifest) -> IngestedDataset:
    """The MLflow dataset for an ingested dataset folder and its manifest."""
    return IngestedDataset(
        _source_of(data_dir), dataset_name(data_dir), digest_of(manifest), profile_of(manifest)
    )


def log_dataset_input(dataset: IngestedDataset, context: str, run_id: str | None = None) -> None:
    """Record the dataset as an input of the (active or given) run, with its use."""
    client = mlflow.MlflowClient()
    run_id = run_id or mlflow.active_run().info.run_id
    known = client.get_run(run_id).inputs.dataset_inputs
    if any(i.dataset.digest == dataset.digest and i.dataset.name == dataset.name for i in known):
        # Already an input of this run (evaluation logs to the training run): one input
        # record per dataset and run; the further use is a run tag.
        client.set_tag(run_id, f"gallerytag.dataset.{context}", dataset.digest)
        return
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    tags = [
        InputTag(MLFLOW_DATASET_CONTEXT, context),
        InputTag(DATASET_HASH_TAG, dataset.profile["dataset_hash"]),
    ]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])
    client.set_tag(run_id, f"gallerytag.dataset.{context}", dataset.digest)


def link_model_metrics(
    run_id: str, model_id: str, step: int, dataset: IngestedDataset, on_dataset: set[str]
) -> None:
    """Link the run's metrics at `step` (the final epoch) to the logged model, those named in
    `on_dataset` with the dataset they were measured on: the MLflow UI lists a logged
    model's datasets from its metrics. The points keep their timestamps, so the run's own
    history gains no duplicate (the same re-linking `Model.log` does for its `step`, which
    would drop the dataset: a run's metric history does not return it)."""
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    metrics = []
    for key in client.get_run(run_id).data.metrics:
        for point in client.get_metric_history(run_id, key):
            if point.step != step:
                continue
            linked = key in on_dataset
            metrics.append(
                Metric(
                    key, point.value, point.timestamp, step, run_id=run_id, model_id=model_id,
                    dataset_name=dataset.name if linked else None,
                    dataset_digest=dataset.digest if linked else None,
                )
            )  # fmt: skip
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    client.set_logged_model_tags(model_id, {DATASET_HASH_TAG: dataset.profile["dataset_hash"]})


def default_run_name(registered_model: str, data_dir: str, now: datetime | None = None) -> str:
    """`<registered model>-<dataset folder>-<UTC time>`, e.g. gallerytag-clipart8-20261201-1403."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{registered_model or 'model'}-{dataset_name(data_dir)}-{moment}"


def source_tags(command: str, git_commit: str | None = None) -> dict[str, str]:
    """The run's source as MLflow shows it: the gallerytag command, not the worker script."""
    tags = {MLFLOW_SOURCE_NAME: command, MLFLOW_SOURCE_TYPE: "JOB"}
    if git_commit and git_commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = git_commit
    return tags


def set_up_experiment(name: str) -> str:
    """Create or select the experiment, marked as model training (not GenAI); its id."""
    experiment = mlflow.set_experiment(name)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) is None:  # a kind chosen in the UI stays
        mlflow.MlflowClient().set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
        )
    return experiment.experiment_id


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run (None for a store without a UI, e.g. sqlite:)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{UI_QUERY}"


def experiment_url(tracking_uri: str, experiment_id: str) -> str | None:
    """The MLflow UI page of an experiment, opening on its runs (None without a UI)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}{UI_QUERY}"


def set_check(name: str, value: float, run_id: str | None = None) -> None:
    """An internal check's figure as a run tag (kept out of the metric charts)."""
    key = f"{CHECK_TAG_PREFIX}{name}"
    if run_id:
        mlflow.MlflowClient().set_tag(run_id, key, repr(float(value)))
    else:
        mlflow.set_tag(key, repr(float(value)))


# TrainConfig fields holding a per-worker rate that Horovod scales by the number of workers.
PER_WORKER_RATES = ("learning_rate", "finetune_learning_rate")


def training_params(params: dict[str, str], workers: int) -> dict[str, str]:
    """A training's params with each learning rate named for what it is: the configured
    per-worker rate (`*_per_worker`) and the rate the optimiser used (`*_effective`)."""
    named = dict(params)
    for key in PER_WORKER_RATES:
        if key in named:
            rate = float(named.pop(key))
            named[f"{key}_per_worker"] = str(rate)
            named[f"{key}_effective"] = str(rate * workers)
    return named
