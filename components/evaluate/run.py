"""Evaluate a registered tagger on a dataset's test split and record the result in MLflow."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from components.common import dataset
from components.common.tracking import TaggerSpec, fetch_tagger
from components.evaluate.core import top_k_accuracy


@dataclass(frozen=True)
class EvaluationResult:
    """Test-split figures of one model on one dataset."""

    model_uri: str
    dataset_hash: str
    images: int
    top1: float
    top3: float

    def to_json(self) -> str:
        """For files and logs."""
        return json.dumps(asdict(self), indent=2)


def predict_split(
    model, dataset_dir: str, manifest: dataset.Manifest, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and true labels for every image of one split."""
    from components.common.tfdata import make_dataset

    files = dataset.shard_paths(dataset_dir, manifest, split)
    batches = make_dataset(files, manifest.image_size, 64, training=False)
    probabilities, labels = [], []
    for images, batch_labels in batches:
        probabilities.append(model.predict_on_batch(images))
        labels.append(batch_labels.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def _check_compatible(
    tagger: TaggerSpec, model_uri: str, manifest: dataset.Manifest, dataset_dir: str
) -> None:
    if tagger.labels != manifest.labels:
        raise dataset.DatasetError(
            f"model {model_uri} knows labels {tagger.labels} but {dataset_dir} has "
            f"{manifest.labels}; evaluate on the dataset the model was trained for"
        )
    if tagger.image_size != manifest.image_size:
        raise dataset.DatasetError(
            f"model {model_uri} expects {tagger.image_size}px images, the dataset has "
            f"{manifest.image_size}px; re-ingest with --image-size {tagger.image_size}"
        )


def evaluate(model_uri: str, dataset_dir: str, split: str = "test") -> EvaluationResult:
    """Score the model on the split; log the figures to the model's training run."""
    import mlflow

    manifest = dataset.read_manifest(dataset_dir)
    if manifest.split_size(split) == 0:
        raise dataset.DatasetError(
            f"{dataset_dir} has no '{split}' images to evaluate on; re-ingest with a non-zero "
            f"{split} ratio"
        )
    with tempfile.TemporaryDirectory(prefix="gallerytag-eval-") as tmp:
        tagger = fetch_tagger(model_uri, tmp)
        _check_compatible(tagger, model_uri, manifest, dataset_dir)
        probabilities, labels = predict_split(tagger.load(), dataset_dir, manifest, split)
    result = EvaluationResult(
        model_uri=model_uri,
        dataset_hash=manifest.dataset_hash,
        images=len(labels),
        top1=top_k_accuracy(probabilities, labels, 1),
        top3=top_k_accuracy(probabilities, labels, 3),
    )
    if tagger.run_id:
        with mlflow.start_run(run_id=tagger.run_id):
            mlflow.log_metrics({f"{split}_top1": result.top1, f"{split}_top3": result.top3})
            mlflow.log_dict(asdict(result), f"evaluation/{split}.json")
    return result
