"""Scoring a tagger over dataset splits: its predictions (Keras, f32; optionally also through
the OpenVINO reduced-precision path `gallerytag tag --precision` runs) and the figures
computed from them. run.py wires these into files, the report and MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from components.common import dataset, progress
from components.common.tracking import TaggerSpec
from components.evaluate import core
from components.evaluate.config import EvaluateConfig, SuspectConfig
from components.evaluate.tag_policy import derive_policy

MAX_KEPT_SUSPECT_IMAGES = 2000  # contradicted images whose pixels are kept for the report


@dataclass
class Predictions:
    """A model's outputs over one or more splits, row-aligned."""

    probabilities: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray
    uris: list[str]
    images: dict[int, np.ndarray]  # a few rows' pixels, for panels
    reduced: np.ndarray | None = None  # the same rows scored in reduced precision, if asked


@dataclass(frozen=True)
class ReducedScorer:
    """The tagger compiled by OpenVINO in reduced precision, as `tag --precision` runs it."""

    precision: str  # asked for: "bf16"
    ran_as: str  # what the CPU plugin really runs: "bf16", or "f32" on a CPU without bf16
    origin: str  # where the IR came from (logged with the version, or exported here)
    predict: Callable[[np.ndarray], np.ndarray]

    @property
    def fell_back(self) -> bool:
        """True when OpenVINO kept f32 because this CPU cannot run the asked precision."""
        return self.ran_as != self.precision

    def note(self) -> str:
        """One line for the user: what ran, and whether the CPU honoured the request."""
        if self.fell_back:
            return (
                f"{self.precision} asked for, but this CPU has no {self.precision} support: "
                f"OpenVINO ran {self.ran_as}, so these figures are {self.ran_as}'s, not "
                f"{self.precision}'s; IR {self.origin}"
            )
        return f"OpenVINO's CPU plugin ran {self.ran_as}; IR {self.origin}"


def reduced_scorer(tagger: TaggerSpec, precision: str, cache_dir: str) -> ReducedScorer | None:
    """The reduced-precision path for `tagger` (None for f32): the IR `gallerytag tag` would
    use (components/common/tagger_ir.py; exported into `cache_dir` when the version has
    none), compiled with `precision` as the tag workers compile it."""
    if precision == "f32":
        return None
    from components.common.tagger_ir import RuntimeUnavailable, openvino_ir_for

    try:
        ir_file, origin = openvino_ir_for(tagger, cache_dir)
        from models.openvino_ir import CompiledTagger

        compiled = CompiledTagger(ir_file, precision=precision)
    except (RuntimeUnavailable, ImportError) as error:
        raise RuntimeUnavailable(
            f"--precision {precision} scores {tagger.uri} on OpenVINO, which cannot run it "
            f"here: {error}; evaluate with --precision f32"
        ) from None
    return ReducedScorer(precision, compiled.inference_precision, origin, compiled.predict)


def feature_model(model):
    """The tagger with a second output: the backbone's pooled embedding."""
    import keras

    nested = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.Model)]
    if not nested or nested[0] + 1 >= len(model.layers):
        raise ValueError(f"{model.name} is not a backbone + head tagger")
    embedding = model.layers[nested[0] + 1].input
    return keras.Model(model.inputs, [embedding, *model.outputs])


def predict(
    model,
    batches,
    keep,
    shown: progress.Progress | None = None,
    reduced: ReducedScorer | None = None,
) -> Predictions:
    """Run the model over `batches`; `keep(row, label, predicted, confidence)` says which
    rows' pixels to hold on to; `shown` displays the images done; `reduced` also scores
    every batch in reduced precision (same pass: the shards are read once)."""
    extractor = feature_model(model)
    probabilities, labels, embeddings, uris, images, lowered = [], [], [], [], {}, []
    for batch in batches:
        embedded, probs = extractor.predict_on_batch(batch["image"])
        if reduced is not None:
            lowered.append(reduced.predict(np.asarray(batch["image"], np.float32)))
        batch_labels = batch["label"].numpy()
        start = sum(len(chunk) for chunk in labels)
        for offset, (label, row) in enumerate(zip(batch_labels, probs, strict=True)):
            predicted = int(row.argmax())
            if keep(int(label), predicted, float(row[predicted])):
                images[start + offset] = batch["image"][offset].numpy().astype(np.uint8)
        probabilities.append(probs)
        labels.append(batch_labels)
        embeddings.append(embedded)
        uris.extend(uri.decode() for uri in batch["uri"].numpy())
        if shown is not None:
            shown.update(len(uris))
    if shown is not None:
        shown.close()
    if not labels:
        raise dataset.DatasetError("no images were read from the split's shards")
    return Predictions(
        np.concatenate(probabilities),
        np.concatenate(labels),
        np.concatenate(embeddings),
        uris,
        images,
        np.concatenate(lowered) if lowered else None,
    )


def panel_keeper(n_classes: int, per_class: int):
    """Keep the first `per_class` right and wrong predictions of each true label."""
    slots = {(label, right): per_class for label in range(n_classes) for right in (True, False)}

    def keep(label: int, predicted: int, _confidence: float) -> bool:
        key = (label, label == predicted)
        if slots.get(key, 0) <= 0:
            return False
        slots[key] -= 1
        return True

    return keep


def suspect_keeper(config: SuspectConfig):
    """Keep pixels of confidently contradicted images (the only possible suspects)."""
    budget = [MAX_KEPT_SUSPECT_IMAGES]

    def keep(label: int, predicted: int, confidence: float) -> bool:
        if label == predicted or confidence < config.min_confidence or budget[0] <= 0:
            return False
        budget[0] -= 1
        return True

    return keep


def compute_metrics(
    predictions: Predictions, names: list[str], config: EvaluateConfig
) -> dict[str, object]:
    """Every figure of the report, as plain JSON-ready values."""
    probabilities, labels = predictions.probabilities, predictions.labels
    top1 = core.top_k_interval(probabilities, labels, 1)
    topk = core.top_k_interval(probabilities, labels, config.k)
    per_class, averages = core.per_class_table(probabilities, labels, names)
    thresholds = {
        kind: core.threshold_table(probabilities, labels, kind) for kind in ("confidence", "margin")
    }
    calibration = core.calibration(probabilities, labels)
    curves = core.pr_curves(probabilities, labels)
    return {
        "images": len(labels),
        "top1": top1.as_dict(),
        f"top{config.k}": topk.as_dict(),
        "k": config.k,
        "per_class": per_class,
        "averages": averages,
        "confusion": core.confusion(probabilities, labels, len(names)).tolist(),
        "average_precision": {
            name: (curve["average_precision"] if curve else None)
            for name, curve in zip(names, curves, strict=True)
        },
        "thresholds": thresholds,
        "policy": derive_policy(
            probabilities, labels, names, config.target_precision, config.min_label_support
        ),
        "ece": calibration.ece,
        "_top1": top1,
        "_topk": topk,
        "_calibration": calibration,
        "_curves": curves,
    }


def precision_cost(predictions: Predictions, scorer: ReducedScorer, k: int) -> dict:
    """What reduced precision costs on these images, against the f32 (Keras) scores: top-1
    and top-k with intervals, their differences, top-1 agreement, max |probability diff|."""
    exact, lowered, labels = predictions.probabilities, predictions.reduced, predictions.labels
    if lowered is None or len(lowered) != len(labels):
        raise ValueError("the reduced-precision scores do not cover the evaluated images")
    top1 = core.top_k_interval(lowered, labels, 1)
    topk = core.top_k_interval(lowered, labels, k)
    return {
        "precision": scorer.precision,
        "ran_as": scorer.ran_as,
        "fell_back": scorer.fell_back,
        "runtime": "openvino",
        "note": scorer.note(),
        "top1": top1.as_dict(),
        f"top{k}": topk.as_dict(),
        "top1_difference": top1.value - core.top_k_accuracy(exact, labels, 1),
        f"top{k}_difference": topk.value - core.top_k_accuracy(exact, labels, k),
        "top1_agreement": float(np.mean(lowered.argmax(axis=1) == exact.argmax(axis=1))),
        "max_abs_dp": float(np.max(np.abs(lowered - exact))),
    }
