"""Pure metric code for the evaluate step: plain numpy on probabilities and labels."""

from __future__ import annotations

import numpy as np


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of rows whose true label is among the k highest probabilities."""
    if len(labels) == 0:
        raise ValueError("top-k accuracy of an empty set is undefined")
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))
