"""Which tags `gallerytag tag` may accept without a person: the auto/review bar that reaches
a promised precision on the evaluated split, per label where the split has enough images of
it, else one global bar (pure: arrays in, the `policy.json` contract out).

Precision of `auto` rows is the accuracy of the predictions kept at a bar; the bar chosen is
the lowest top-1 probability at which the kept predictions reach the target and at least
`min_kept` of them are kept (a bar resting on a handful of images promises nothing).
"""

from __future__ import annotations

import numpy as np

from components.common.policy_file import NEVER, POLICY_SCHEMA_VERSION
from components.evaluate.core import (
    threshold_for_accuracy,
    threshold_table,
    top1_and_margin,
    wilson_interval,
)


def lowest_bar(
    probabilities: np.ndarray, labels: np.ndarray, target: float, min_kept: int
) -> float | None:
    """The lowest confidence threshold of the threshold table whose kept predictions (at
    least `min_kept`) reach `target` accuracy, or None."""
    table = threshold_table(probabilities, labels, "confidence")
    return threshold_for_accuracy(table, target, min_kept)


def derive_policy(
    probabilities: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    target_precision: float,
    min_label_support: int = 30,
    min_kept: int = 10,
) -> dict:
    """The policy.json body: a bar per label (or the global bar), and the precision and
    coverage it gives on these images, with a 95% interval for the precision."""
    predicted, confidence, _ = top1_and_margin(probabilities)
    correct = predicted == labels
    global_bar = lowest_bar(probabilities, labels, target_precision, min_kept)
    per_label = {}
    for index, name in enumerate(names):
        mine = predicted == index
        own = None
        if mine.sum() >= min_label_support:
            own = lowest_bar(probabilities[mine], labels[mine], target_precision, min_kept)
        bar, source = (own, "label") if own is not None else (global_bar, "global")
        per_label[name] = {
            "min_score": NEVER if bar is None else bar,
            "from": source if bar is not None else "none reaches the target",
            "predicted": int(mine.sum()),
        }
    bars = np.array([per_label[names[p]]["min_score"] for p in predicted])
    auto = confidence >= bars
    precision = wilson_interval(int(correct[auto].sum()), int(auto.sum())) if auto.any() else None
    return {
        "schema_version": POLICY_SCHEMA_VERSION,
        "target_precision": target_precision,
        "global_min_score": NEVER if global_bar is None else global_bar,
        "labels": per_label,
        "expected": {
            "precision": precision.as_dict() if precision else None,
            "coverage": float(auto.mean()),
            "images": len(labels),
        },
        "rule": (
            f"auto when the top-1 probability reaches its label's bar; bars are the lowest "
            f"reaching {target_precision} precision on the evaluated split (labels predicted "
            f"fewer than {min_label_support} times use the global bar)"
        ),
    }
