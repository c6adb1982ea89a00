"""WiSE-FT: the weight interpolation is exact at both ends and linear between, and the
configured alpha is bounded."""

from __future__ import annotations

import numpy as np
import pytest

from components.train import wise


def test_interpolate_is_exact_at_the_ends_and_linear_between() -> None:
    """alpha 0 gives the start, 1 the final weights, 0.25 a quarter of the way."""
    start = [np.zeros((2, 3), np.float32), np.array([1.0, 2.0], np.float32)]
    final = [np.ones((2, 3), np.float32), np.array([3.0, -2.0], np.float32)]
    for alpha, expected in ((0.0, start), (1.0, final)):
        mixed = wise.interpolate(start, final, alpha)
        assert all(np.array_equal(a, b) for a, b in zip(mixed, expected, strict=True))
    quarter = wise.interpolate(start, final, 0.25)
    assert np.allclose(quarter[0], 0.25) and np.allclose(quarter[1], [1.5, 1.0])
    assert quarter[0].dtype == np.float32


def test_interpolate_keeps_integer_state_and_refuses_mismatched_weights() -> None:
    """Counters are taken from the final weights; different shapes or counts are errors."""
    mixed = wise.interpolate([np.array([3], np.int64)], [np.array([7], np.int64)], 0.5)
    assert mixed[0].tolist() == [7]
    with pytest.raises(ValueError, match="shapes differ"):
        wise.interpolate([np.zeros(2)], [np.zeros(3)], 0.5)
    with pytest.raises(ValueError, match="weight arrays"):
        wise.interpolate([np.zeros(2)], [], 0.5)


def test_wise_alpha_must_lie_in_the_unit_interval() -> None:
    """0 is the probe, 1 the plain fine-tune; anything outside is refused by name."""
    from components.train.config import TrainConfig

    assert TrainConfig(wise_alpha=1.0).wise_alpha == 1.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="wise_alpha must be in"):
            TrainConfig(wise_alpha=bad)
