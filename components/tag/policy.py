"""Pure tagging policy: turn one probability vector into a tag row with auto/review status."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROW_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TagPolicy:
    """When a prediction is trusted (`auto`) rather than sent to a person (`review`)."""

    min_score: float = 0.5  # top-1 probability (multi-label: default per-label cut-off)
    min_margin: float = 0.1  # top-1 minus top-2 (multi-label: distance to each cut-off)
    top_k: int = 3  # how many labels each row lists (single-label models)
    label_thresholds: dict[str, float] = field(default_factory=dict)  # multi-label cut-offs

    def __post_init__(self) -> None:
        values = [self.min_score, self.min_margin, *self.label_thresholds.values()]
        if not all(0.0 <= value <= 1.0 for value in values):
            raise ValueError("min_score, min_margin and label thresholds are in [0, 1]")
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")

    def threshold(self, label: str) -> float:
        """A multi-label model's cut-off for one label."""
        return self.label_thresholds.get(label, self.min_score)


def tag_row(
    uri: str,
    content_hash: str,
    probabilities: np.ndarray,
    labels: list[str],
    policy: TagPolicy,
    model: str,
    model_version: str | None,
    multi_label: bool = False,
) -> dict:
    """The documented tag row for one image (see docs/architecture.md, 'Tags')."""
    order = np.argsort(-probabilities, kind="stable")
    decide = _multi_label_decision if multi_label else _single_label_decision
    tags, margin, reasons = decide(probabilities, labels, policy, order)
    row = {
        "schema_version": ROW_SCHEMA_VERSION,
        "uri": uri,
        "content_hash": content_hash,
        "model": model,
        "model_version": model_version,
        "labels": tags,
        "top1": labels[order[0]],
        "score": round(float(probabilities[order[0]]), 6),
        "margin": round(margin, 6),
        "status": "review" if reasons else "auto",
    }
    if reasons:
        row["reason"] = "; ".join(reasons)
    return row


def _scored(labels: list[str], probabilities: np.ndarray, indices) -> list[dict]:
    return [{"label": labels[i], "score": round(float(probabilities[i]), 6)} for i in indices]


def _single_label_decision(
    probabilities: np.ndarray, labels: list[str], policy: TagPolicy, order: np.ndarray
) -> tuple[list[dict], float, list[str]]:
    """Softmax model: the top k labels; review when top-1 or its lead is too small."""
    score = float(probabilities[order[0]])
    runner_up = float(probabilities[order[1]]) if len(order) > 1 else 0.0
    margin = score - runner_up
    reasons = []
    if score < policy.min_score:
        reasons.append(f"top-1 score {score:.3f} < {policy.min_score}")
    if margin < policy.min_margin:
        reasons.append(f"margin {margin:.3f} < {policy.min_margin}")
    return _scored(labels, probabilities, order[: policy.top_k]), margin, reasons


def _multi_label_decision(
    probabilities: np.ndarray, labels: list[str], policy: TagPolicy, order: np.ndarray
) -> tuple[list[dict], float, list[str]]:
    """Sigmoid (multi-label) model: every label at or above its own cut-off is a tag;
    review when any label's score is within `min_margin` of its cut-off."""
    cutoffs = np.array([policy.threshold(label) for label in labels])
    chosen = [i for i in order if probabilities[i] >= cutoffs[i]]
    distances = np.abs(probabilities - cutoffs)
    closest = int(np.argmin(distances))
    margin = float(distances[closest])
    reasons = []
    if margin < policy.min_margin:
        reasons.append(
            f"'{labels[closest]}' score {probabilities[closest]:.3f} is within "
            f"{policy.min_margin} of its threshold {cutoffs[closest]}"
        )
    return _scored(labels, probabilities, chosen), margin, reasons


def rejected_row(uri: str, reason: str, detail: str, model: str, version: str | None) -> dict:
    """The row for an input that could not be tagged, with why."""
    return {
        "schema_version": ROW_SCHEMA_VERSION,
        "uri": uri,
        "model": model,
        "model_version": version,
        "status": "rejected",
        "reason": reason,
        "detail": detail,
    }


def policy_from_evaluation(evaluation: dict, top_k: int = 3) -> TagPolicy:
    """The policy the evaluation's threshold table recommends (evaluation.json, written by
    `gallerytag evaluate`): the lowest top-1 probability whose kept predictions reached the
    target accuracy on the test split, and no margin rule (the table did not use one)."""
    recommended = evaluation.get("recommended") or {}
    threshold = recommended.get("min_confidence")
    if threshold is None:
        target = recommended.get("target_accuracy")
        raise ValueError(
            f"the evaluation found no confidence threshold reaching {target} accuracy, so "
            "every tag would need review; pass --min-score yourself or improve the model"
        )
    return TagPolicy(min_score=float(threshold), min_margin=0.0, top_k=top_k)
