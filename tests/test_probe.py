"""The linear probe (the floor a fine-tune must beat, and LP-FT's head init) and the recipe's
sizing rules: pure functions on arrays."""

from __future__ import annotations

import numpy as np
import pytest

from components.common.probe import fit_probe
from components.train.recipe import MAX_EPOCHS, MIN_EPOCHS, auto_epochs, over_budget


def _blobs(n_per_class: int, n_classes: int, seed: int, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(n_classes, 16))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = centres[labels] + rng.normal(0, spread, size=(len(labels), 16)) + 50.0
    return features.astype(np.float32), labels


def test_probe_matches_sklearn_on_raw_features() -> None:
    """The folded kernel/bias reproduce sklearn's standardised pipeline exactly, so the
    head it initialises predicts what the probe predicts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, train_labels = _blobs(40, 4, seed=0, spread=3.0)
    validation, validation_labels = _blobs(10, 4, seed=0, spread=3.0)
    probe = fit_probe(train, train_labels, 4, validation, validation_labels)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=probe.c, max_iter=3000))
    reference.fit(train, train_labels)
    np.testing.assert_allclose(
        probe.probabilities(validation), reference.predict_proba(validation), atol=1e-4
    )
    assert probe.validation_accuracy == pytest.approx(
        reference.score(validation, validation_labels)
    )


def test_probe_chooses_regularisation_on_validation_and_separates_blobs() -> None:
    """Well separated classes: near-perfect held-out accuracy; C comes from the grid."""
    train, train_labels = _blobs(30, 5, seed=1)
    validation, validation_labels = _blobs(10, 5, seed=1)
    test, test_labels = _blobs(10, 5, seed=1)
    probe = fit_probe(train, train_labels, 5, validation, validation_labels)
    assert probe.accuracy(test, test_labels) > 0.95
    assert probe.c in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def test_probe_binary_and_absent_label() -> None:
    """Two labels use sklearn's one-row binary form; a label with no training image is
    never predicted, and the kernel still has a column for it."""
    train, train_labels = _blobs(30, 2, seed=2)
    probe = fit_probe(train, train_labels, 3)
    assert probe.kernel.shape == (16, 3) and probe.validation_accuracy is None
    probabilities = probe.probabilities(train)
    assert probabilities[:, 2].max() < 1e-6
    assert probe.accuracy(train, train_labels) > 0.95
    with pytest.raises(ValueError, match="at least two labels"):
        fit_probe(train[:30], train_labels[:30], 2)


def test_auto_epochs_scale_with_the_dataset_within_bounds() -> None:
    """A fixed number of steps: small galleries get more epochs, large ones fewer."""
    assert auto_epochs(545, 32) == 15  # 17 steps per epoch, 240 steps
    assert auto_epochs(100, 32) == MAX_EPOCHS
    assert auto_epochs(200_000, 64) == MIN_EPOCHS
    assert auto_epochs(2100, 64) > auto_epochs(2100, 32) / 2 - 1


def test_time_budget_stops_before_the_epoch_that_would_overrun() -> None:
    """No budget never stops; otherwise stop when another epoch would end past it."""
    assert not over_budget(10_000, 100, 0)
    assert not over_budget(400, 100, 10)
    assert over_budget(550, 100, 10)


def test_new_options_refuse_nonsense_with_a_clear_error(tmp_path) -> None:
    """--target-precision outside (0, 1], a negative time budget, label smoothing >= 1, an
    unknown head init and a --thresholds-from path that is not there: one clear error each."""
    from click.testing import CliRunner

    from components.common.tracking import TaggerSpec
    from components.tag.policy_source import read_policy
    from components.train.config import TrainConfig
    from gallerytag.cli import cli

    result = CliRunner().invoke(
        cli, ["evaluate", "--model", "m", "--data", "d", "--target-precision", "1.5"]
    )
    assert result.exit_code == 2 and "--target-precision" in result.output
    for bad in ({"time_budget_minutes": -1}, {"label_smoothing": 1.0}, {"head_init": "lp"}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    spec = TaggerSpec("m.keras", ["a", "b"], 32, "pad", False, "models:/x/1", "run1", "1")
    with pytest.raises(ValueError, match="does not exist"):
        read_policy(str(tmp_path / "nowhere"), spec, str(tmp_path))
