"""Label-noise suspects, pure: images whose label the model contradicts with high confidence
and whose nearest neighbours in the backbone's embedding space mostly carry another label."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from components.evaluate.config import SuspectConfig


def find_suspects(
    embeddings: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    config: SuspectConfig = SuspectConfig(),
) -> list[dict]:
    """Rows {index, label, predicted, confidence, own_label_share, neighbour_label, labels
    (top 3 {label, score})}, most confident first; `index` points back into the inputs."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(labels)), predicted]
    contradicted = np.flatnonzero((predicted != labels) & (confidence >= config.min_confidence))
    if len(contradicted) == 0 or len(labels) < 2:
        return []
    k = min(config.neighbours, len(labels) - 1)
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(embeddings)
    _, neighbours = index.kneighbors(embeddings[contradicted])
    rows = []
    for row, near in zip(contradicted, neighbours, strict=True):
        near = near[near != row][:k]  # an image is not its own neighbour
        near_labels = labels[near]
        own_share = float(np.mean(near_labels == labels[row]))
        if own_share > config.max_own_label_share:
            continue
        majority = int(np.bincount(near_labels, minlength=len(names)).argmax())
        rows.append(
            {
                "index": int(row),
                "label": names[labels[row]],
                "predicted": names[predicted[row]],
                "confidence": round(float(confidence[row]), 6),
                "own_label_share": round(own_share, 6),
                "neighbour_label": names[majority],
                "labels": [  # the model's top 3, as tag rows carry them (for the review page)
                    {"label": names[i], "score": round(float(probabilities[row, i]), 6)}
                    for i in np.argsort(-probabilities[row], kind="stable")[:3]
                ],
            }
        )
    return sorted(rows, key=lambda r: -r["confidence"])
