"""The linear probe: logistic regression on a frozen backbone's pooled features.

It is the floor a fine-tuned tagger must beat (evaluate and the promotion gate report it),
and the head a fine-tune starts from (LP-FT, Kumar et al. 2022: initialising the head from
the probe keeps the first fine-tuning steps from wrecking the pretrained features).
The core works on feature arrays; `split_features` is the thin TensorFlow adapter.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# Inverse regularisation strengths tried on validation; standardised 1280-d features on a
# few hundred images want strong regularisation, so the grid leans small.
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class LinearProbe:
    """A fitted multinomial logistic regression, expressed on raw (unscaled) features."""

    kernel: np.ndarray  # (features, classes): logits = features @ kernel + bias
    bias: np.ndarray  # (classes,)
    c: float  # the regularisation chosen on validation
    validation_accuracy: float | None  # None when there was no validation split

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Softmax class probabilities for each row of `features`."""
        logits = features @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy on labelled features."""
        return float((self.probabilities(features).argmax(axis=1) == labels).mean())


def fit_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    n_classes: int,
    validation_features: np.ndarray | None = None,
    validation_labels: np.ndarray | None = None,
) -> LinearProbe:
    """Standardise, fit one logistic regression per C and keep the best on validation
    (accuracy, then log-loss); without validation images C = 0.01."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    present = np.unique(train_labels)
    if len(present) < 2:
        raise ValueError("a linear probe needs training images of at least two labels")
    scaler = StandardScaler().fit(train_features)
    scaled_train = scaler.transform(train_features)
    has_validation = validation_features is not None and len(validation_features) > 0
    grid = C_GRID if has_validation else (0.01,)
    best: tuple[tuple[float, float], LinearProbe] | None = None
    for c in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=3000).fit(scaled_train, train_labels)
        probe = _unscaled(model.coef_, model.intercept_, present, n_classes, scaler, c, None)
        if not has_validation:
            return probe
        probabilities = probe.probabilities(validation_features)
        accuracy = float((probabilities.argmax(axis=1) == validation_labels).mean())
        rows = np.arange(len(validation_labels))
        log_loss = float(-np.log(probabilities[rows, validation_labels] + 1e-12).mean())
        score = (accuracy, -log_loss)
        if best is None or score > best[0]:
            best = (score, _with_accuracy(probe, accuracy))
    assert best is not None
    return best[1]


def _unscaled(coef, intercept, present, n_classes, scaler, c, accuracy) -> LinearProbe:
    """Fold the standardisation into the weights, and give absent classes -inf-like bias."""
    scale = scaler.scale_
    if coef.shape[0] == 1:  # sklearn's binary case: one row for the positive class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    kernel = np.zeros((coef.shape[1], n_classes), dtype=np.float64)
    bias = np.full(n_classes, -30.0)  # a label with no training image is never predicted
    kernel[:, present] = (coef / scale).T
    bias[present] = intercept - (coef * (scaler.mean_ / scale)).sum(axis=1)
    return LinearProbe(kernel.astype(np.float32), bias.astype(np.float32), c, accuracy)


def _with_accuracy(probe: LinearProbe, accuracy: float) -> LinearProbe:
    return LinearProbe(probe.kernel, probe.bias, probe.c, accuracy)


def split_features(
    backbone,
    files: list[str],
    image_size: int,
    batch_size: int = 64,
    num_shards: int = 1,
    shard_index: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features, labels) of the records in `files` (this shard's 1/num_shards),
    without augmentation."""
    from components.common.tfdata import make_dataset

    batches = make_dataset(
        files, image_size, batch_size, training=False, num_shards=num_shards,
        shard_index=shard_index,
    )  # fmt: skip
    features, labels = [], []
    for images, batch_labels in batches:
        features.append(np.asarray(backbone.predict_on_batch(images)))
        labels.append(batch_labels.numpy())
    if not features:
        return np.zeros((0, int(backbone.output_shape[-1])), np.float32), np.zeros(0, np.int64)
    return np.concatenate(features), np.concatenate(labels)
