"""Pure tagging policy: turn one probability vector into a tag row with auto/review status."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROW_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TagPolicy:
    """When a prediction is trusted (`auto`) rather than sent to a person (`review`)."""

    min_score: float = 0.5  # top-1 probability
    min_margin: float = 0.1  # top-1 minus top-2 probability
    top_k: int = 3  # how many labels each row lists

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0 or not 0.0 <= self.min_margin <= 1.0:
            raise ValueError("min_score and min_margin are probabilities in [0, 1]")
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")


def tag_row(
    uri: str,
    content_hash: str,
    probabilities: np.ndarray,
    labels: list[str],
    policy: TagPolicy,
    model: str,
    model_version: str | None,
) -> dict:
    """The documented tag row for one image (see docs/architecture.md, 'Tags')."""
    order = np.argsort(-probabilities, kind="stable")
    top = [
        {"label": labels[i], "score": round(float(probabilities[i]), 6)}
        for i in order[: policy.top_k]
    ]
    score = float(probabilities[order[0]])
    runner_up = float(probabilities[order[1]]) if len(order) > 1 else 0.0
    margin = score - runner_up
    reasons = []
    if score < policy.min_score:
        reasons.append(f"top-1 score {score:.3f} < {policy.min_score}")
    if margin < policy.min_margin:
        reasons.append(f"margin {margin:.3f} < {policy.min_margin}")
    row = {
        "schema_version": ROW_SCHEMA_VERSION,
        "uri": uri,
        "content_hash": content_hash,
        "model": model,
        "model_version": model_version,
        "labels": top,
        "top1": labels[order[0]],
        "score": round(score, 6),
        "margin": round(margin, 6),
        "status": "review" if reasons else "auto",
    }
    if reasons:
        row["reason"] = "; ".join(reasons)
    return row


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
