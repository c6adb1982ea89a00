"""Pure metric code for the evaluate step: numpy arrays of probabilities and labels in, plain
numbers and tables out. Intervals and per-class figures come from scipy / scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn import metrics as skm

CONFIDENCE_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
MARGIN_THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Interval:
    """A proportion with its 95% Wilson score interval."""

    value: float
    low: float
    high: float
    successes: int
    trials: int

    def as_dict(self) -> dict:
        """For JSON files."""
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.trials}


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Proportion with its Wilson score interval (scipy), good even near 0 or 1."""
    if trials <= 0:
        raise ValueError("an interval needs at least one trial")
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="wilson")
    return Interval(successes / trials, float(ci.low), float(ci.high), int(successes), trials)


def top_k_correct(probabilities: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
    """Per row: is the true label among the k highest probabilities (ties broken by index)."""
    if len(labels) == 0:
        raise ValueError("top-k accuracy of an empty set is undefined")
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=1)


def top_k_interval(probabilities: np.ndarray, labels: np.ndarray, k: int = 1) -> Interval:
    """Top-k accuracy with its 95% Wilson interval."""
    return wilson_interval(int(top_k_correct(probabilities, labels, k).sum()), len(labels))


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of rows whose true label is among the k highest probabilities."""
    return float(np.mean(top_k_correct(probabilities, labels, k)))


def top1_and_margin(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted class, its probability, and the gap to the runner-up, per row."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    predicted = order[:, 0]
    rows = np.arange(len(probabilities))
    top1 = probabilities[rows, predicted]
    second = probabilities[rows, order[:, 1]] if probabilities.shape[1] > 1 else 0.0 * top1
    return predicted, top1, top1 - second


def per_class_table(
    probabilities: np.ndarray, labels: np.ndarray, names: list[str]
) -> tuple[list[dict], dict]:
    """Per-class precision / recall / F1 / support, and the macro and micro averages."""
    predicted = probabilities.argmax(axis=1)
    ids = list(range(len(names)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=ids, zero_division=0
    )
    rows = [
        {
            "label": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    ]
    averages = {}
    for average in ("macro", "micro"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            labels, predicted, labels=ids, average=average, zero_division=0
        )
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return rows, averages


def confusion(probabilities: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts: row = true label, column = predicted label."""
    predicted = probabilities.argmax(axis=1)
    return skm.confusion_matrix(labels, predicted, labels=list(range(n_classes)))


def pr_curves(probabilities: np.ndarray, labels: np.ndarray) -> list[dict]:
    """One-vs-rest precision-recall curve and average precision per class (None when the
    class is absent from the split: its curve is undefined)."""
    curves = []
    for index in range(probabilities.shape[1]):
        positives = labels == index
        if not positives.any():
            curves.append(None)
            continue
        precision, recall, _ = skm.precision_recall_curve(positives, probabilities[:, index])
        ap = skm.average_precision_score(positives, probabilities[:, index])
        curves.append({"precision": precision, "recall": recall, "average_precision": float(ap)})
    return curves


def threshold_table(
    probabilities: np.ndarray, labels: np.ndarray, kind: str = "confidence"
) -> list[dict]:
    """Coverage vs accuracy when only predictions above a top-1 probability (`confidence`) or
    a top1-top2 gap (`margin`) are kept: what the tagging step's review policy trades."""
    predicted, top1, margin = top1_and_margin(probabilities)
    score, thresholds = (
        (top1, CONFIDENCE_THRESHOLDS) if kind == "confidence" else (margin, MARGIN_THRESHOLDS)
    )
    correct = predicted == labels
    rows = []
    for threshold in thresholds:
        kept = score >= threshold
        n_kept = int(kept.sum())
        rows.append(
            {
                "threshold": threshold,
                "coverage": n_kept / len(labels),
                "kept": n_kept,
                "accuracy": float(correct[kept].mean()) if n_kept else None,
            }
        )
    return rows


def threshold_for_accuracy(table: list[dict], target: float, min_kept: int = 1) -> float | None:
    """Lowest threshold whose kept predictions (at least `min_kept` of them) reach `target`
    accuracy (None if none does)."""
    for row in table:
        if row["kept"] >= min_kept and row["accuracy"] is not None and row["accuracy"] >= target:
            return float(row["threshold"])
    return None


@dataclass(frozen=True)
class Calibration:
    """Reliability of the top-1 probability: bins and the expected calibration error."""

    ece: float
    bin_edges: np.ndarray
    confidence: np.ndarray  # mean top-1 probability per bin (nan when empty)
    accuracy: np.ndarray  # accuracy per bin (nan when empty)
    counts: np.ndarray


def calibration(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> Calibration:
    """Expected calibration error over equal-width bins of the top-1 probability."""
    predicted, top1, _ = top1_and_margin(probabilities)
    correct = (predicted == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (low, high]; a probability of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, top1, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(index, weights=top1, minlength=n_bins) / counts
        mean_acc = np.bincount(index, weights=correct, minlength=n_bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] / len(labels) * np.abs(mean_acc - mean_conf)[filled]))
    return Calibration(ece, edges, mean_conf, mean_acc, counts)


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test on the images where exactly one of two models is right."""

    candidate_only: int  # candidate right, champion wrong
    champion_only: int
    p_value: float  # two-sided
    difference: float  # candidate accuracy minus champion accuracy


def paired_test(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> PairedTest:
    """Compare two models on the same images (exact binomial test on the discordant pairs)."""
    if candidate_correct.shape != champion_correct.shape or len(candidate_correct) == 0:
        raise ValueError("a paired test needs both models scored on the same, non-empty images")
    b = int(np.sum(candidate_correct & ~champion_correct))
    c = int(np.sum(~candidate_correct & champion_correct))
    p_value = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    difference = float(np.mean(candidate_correct) - np.mean(champion_correct))
    return PairedTest(b, c, p_value, difference)
