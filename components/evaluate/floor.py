"""The floor a fine-tuned tagger must beat: its own backbone, frozen, with a linear probe.

Fits `components.common.probe` on the pretrained backbone's features of the training split
(C chosen on validation) and scores it on the evaluated split, so the report can say
"fine-tuned 0.xx vs probe 0.yy" and the gate can refuse a model that is no better than
frozen features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.common import dataset
from components.common.probe import fit_probe, split_features
from components.evaluate import core


@dataclass(frozen=True)
class ProbeFloor:
    """The linear probe's figures on the evaluated split, or why there are none."""

    backbone: str | None
    top1: core.Interval | None = None
    topk: core.Interval | None = None
    k: int = 3
    c: float | None = None
    validation_accuracy: float | None = None
    unavailable: str | None = None  # the reason when the probe could not be measured

    def as_dict(self) -> dict:
        """The `probe` block of evaluation.json."""
        if self.unavailable:
            return {"backbone": self.backbone, "unavailable": self.unavailable}
        return {
            "backbone": self.backbone,
            "top1": self.top1.as_dict(),
            f"top{self.k}": self.topk.as_dict(),
            "c": self.c,
            "validation_accuracy": self.validation_accuracy,
        }


def measure_probe(
    backbone: str | None,
    weights: str,
    dataset_dir: str,
    manifest: dataset.Manifest,
    split: str = "test",
    k: int = 3,
    batch_size: int = 64,
) -> ProbeFloor:
    """Fit the probe on the pretrained `backbone`'s features and score it on `split`."""
    from models.registry import BACKBONES, build_backbone

    if backbone not in BACKBONES:
        return ProbeFloor(backbone, unavailable=f"backbone {backbone!r} is not in the registry")
    if weights == "none":
        return ProbeFloor(backbone, unavailable="the model was trained from random weights")
    try:
        frozen = build_backbone(backbone, manifest.image_size, weights=weights)
    except (OSError, ValueError) as error:  # e.g. keras.applications weights not reachable
        return ProbeFloor(backbone, unavailable=f"pretrained weights not loadable: {error}")

    def features(name: str) -> tuple[np.ndarray, np.ndarray]:
        files = dataset.shard_paths(dataset_dir, manifest, name)
        return split_features(frozen, files, manifest.image_size, batch_size)

    train, validation, scored = features("train"), features("validation"), features(split)
    if len(np.unique(train[1])) < 2:
        return ProbeFloor(backbone, unavailable="the training split holds fewer than 2 labels")
    probe = fit_probe(*train, len(manifest.labels), *validation)
    probabilities = probe.probabilities(scored[0])
    return ProbeFloor(
        backbone=backbone,
        top1=core.top_k_interval(probabilities, scored[1], 1),
        topk=core.top_k_interval(probabilities, scored[1], k),
        k=k,
        c=probe.c,
        validation_accuracy=probe.validation_accuracy,
    )
