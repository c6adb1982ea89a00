"""Pure tagging policy: turn one probability vector into a tag row with auto/review status."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from components.common.policy_file import NEVER, POLICY_SCHEMA_VERSION
from components.common.tag_rows import utc_now

ROW_SCHEMA_VERSION = 2  # 2: every row has `tagged_at`


@dataclass(frozen=True)
class TagPolicy:
    """When a prediction is trusted (`auto`) rather than sent to a person (`review`)."""

    min_score: float = 0.5  # top-1 probability (multi-label: default per-label cut-off)
    min_margin: float = 0.1  # top-1 minus top-2 (multi-label: distance to each cut-off)
    top_k: int = 3  # how many labels each row lists (single-label models)
    label_thresholds: dict[str, float] = field(default_factory=dict)  # multi-label cut-offs
    # Single-label: the top-1 bar per predicted label (from an evaluation); others min_score.
    # A bar above 1 means that label always goes to review.
    label_min_scores: dict[str, float] = field(default_factory=dict)
    review_all: str = ""  # when set, every row goes to review with this reason
    origin: dict = field(default_factory=dict)  # where the bars came from, what they promise

    def __post_init__(self) -> None:
        values = [self.min_score, self.min_margin, *self.label_thresholds.values()]
        if not all(0.0 <= value <= 1.0 for value in values):
            raise ValueError("min_score, min_margin and label thresholds are in [0, 1]")
        if not all(0.0 <= value <= NEVER for value in self.label_min_scores.values()):
            raise ValueError("per-label bars are in [0, 1] (1.01: always review)")
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")

    def threshold(self, label: str) -> float:
        """A multi-label model's cut-off for one label."""
        return self.label_thresholds.get(label, self.min_score)

    def bar(self, label: str) -> float:
        """A single-label model's top-1 probability needed for `auto` when it predicts `label`."""
        return self.label_min_scores.get(label, self.min_score)

    def as_record(self) -> dict:
        """What `_SUCCESS.json` and the summary say about the policy a run used."""
        record = {
            "min_score": self.min_score,
            "min_margin": self.min_margin,
            "label_min_scores": self.label_min_scores,
            "label_thresholds": self.label_thresholds,
            "review_all": self.review_all or None,
            "top_k": self.top_k,  # rows keep only their top k: another k means re-tagging
        }
        return record | {"origin": self.origin}


def tag_row(
    uri: str,
    content_hash: str,
    probabilities: np.ndarray,
    labels: list[str],
    policy: TagPolicy,
    model: str,
    model_version: str | None,
    multi_label: bool = False,
    tagged_at: str | None = None,
) -> dict:
    """The documented tag row for one image (see docs/architecture.md, 'Tags'), stamped with
    `tagged_at` (default: now, UTC)."""
    order = np.argsort(-probabilities, kind="stable")
    decide = _multi_label_decision if multi_label else _single_label_decision
    tags, margin, reasons = decide(probabilities, labels, policy, order)
    if policy.review_all:
        reasons = [policy.review_all]
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
        "tagged_at": tagged_at or utc_now(),
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
    bar = policy.bar(labels[order[0]])
    if score < bar:
        reasons.append(f"top-1 score {score:.3f} < {min(bar, 1.0)} for '{labels[order[0]]}'")
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


def rejected_row(
    uri: str,
    reason: str,
    detail: str,
    model: str,
    version: str | None,
    tagged_at: str | None = None,
) -> dict:
    """The row for an input that could not be tagged, with why (and when: default now)."""
    return {
        "schema_version": ROW_SCHEMA_VERSION,
        "uri": uri,
        "model": model,
        "model_version": version,
        "status": "rejected",
        "reason": reason,
        "detail": detail,
        "tagged_at": tagged_at or utc_now(),
    }


UNEVALUATED = (
    "model not evaluated: no auto/review policy, so every image goes to review; run "
    "`gallerytag evaluate --model MODEL --data DATASET` or pass --min-score / --min-margin"
)


def policy_from_file(policy: dict, top_k: int = 3) -> TagPolicy:
    """The TagPolicy of a `policy.json` written by `gallerytag evaluate` (per-label bars from
    the threshold table at the target precision; no margin rule, the table did not use one)."""
    if policy.get("schema_version") != POLICY_SCHEMA_VERSION:
        raise ValueError(
            f"policy schema_version {policy.get('schema_version')!r} is not "
            f"{POLICY_SCHEMA_VERSION}; re-run `gallerytag evaluate` with this gallerytag"
        )
    bars = {label: float(row["min_score"]) for label, row in policy["labels"].items()}
    origin = {
        "source": "evaluation",
        "target_precision": policy["target_precision"],
        "expected": policy["expected"],
        "model_uri": policy.get("model_uri"),
        "run_id": policy.get("run_id"),
        "dataset_hash": policy.get("dataset_hash"),
    }
    global_bar = min(float(policy["global_min_score"]), 1.0)
    return TagPolicy(global_bar, 0.0, top_k, label_min_scores=bars, origin=origin)


def unevaluated_policy(top_k: int = 3) -> TagPolicy:
    """For a model with no evaluation: nothing is trusted, every row goes to review."""
    return TagPolicy(top_k=top_k, review_all=UNEVALUATED, origin={"source": "none"})
