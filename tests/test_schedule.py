"""Exact learning-rate sequences of the warm-up, plateau, cosine and early-stopping rules."""

from __future__ import annotations

import pytest

from components.train.loop import warmup_learning_rate
from components.train.schedule import Action, CosineSchedule, EarlyStopping, PlateauSchedule


def test_warmup_ramps_linearly_to_the_scaled_rate() -> None:
    """From base LR to base * workers over the warm-up steps, then flat."""
    rates = [warmup_learning_rate(step, 0.1, 4, 3) for step in range(6)]
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert warmup_learning_rate(0, 0.1, 4, 0) == pytest.approx(0.4)
    assert warmup_learning_rate(5, 0.1, 1, 3) == pytest.approx(0.1)


def test_plateau_decays_restores_and_stops_when_a_decay_brings_nothing() -> None:
    """The paper's rule, epoch by epoch."""
    schedule = PlateauSchedule(learning_rate=0.01, max_decays=3)
    losses = [1.0, 0.8, 0.85, 0.7, 0.75, 0.76]
    actions, rates = [], []
    for epoch, loss in enumerate(losses):
        actions.append(schedule.after_epoch(epoch, loss))
        rates.append(schedule.current_rate(epoch + 1))
    assert actions == [
        Action.CONTINUE,  # 1.0 best
        Action.CONTINUE,  # 0.8 best
        Action.RESTORE_AND_DECAY,  # worse: back to epoch 1's weights, LR / 10
        Action.CONTINUE,  # 0.7 best: the decay helped
        Action.RESTORE_AND_DECAY,  # worse again: second decay
        Action.STOP,  # the second decay brought nothing
    ]
    assert rates == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])
    assert schedule.best == 0.7 and schedule.best_epoch == 3


def test_plateau_stops_after_max_decays() -> None:
    """Even if each decay helps, there are at most max_decays of them."""
    schedule = PlateauSchedule(learning_rate=1.0, max_decays=1)
    assert schedule.after_epoch(0, 1.0) is Action.CONTINUE
    assert schedule.after_epoch(1, 1.1) is Action.RESTORE_AND_DECAY
    assert schedule.after_epoch(2, 0.9) is Action.CONTINUE
    assert schedule.after_epoch(3, 0.95) is Action.STOP
    assert schedule.current_rate(4) == pytest.approx(0.1)


def test_plateau_state_round_trips() -> None:
    """A resumed schedule continues exactly where the checkpoint left it."""
    schedule = PlateauSchedule(learning_rate=0.01)
    for epoch, loss in enumerate([1.0, 1.2, 0.9]):
        schedule.after_epoch(epoch, loss)
    resumed = PlateauSchedule(**schedule.state())
    assert resumed.after_epoch(3, 0.95) == schedule.after_epoch(3, 0.95)
    assert resumed.state() == schedule.state()


def test_cosine_sequence() -> None:
    """Half a cosine from the start rate to the floor."""
    schedule = CosineSchedule(learning_rate=1.0, epochs=4, min_rate=0.0)
    rates = [schedule.current_rate(epoch) for epoch in range(5)]
    assert rates == pytest.approx([1.0, 0.853553, 0.5, 0.146447, 0.0], abs=1e-6)


def test_early_stopping_patience() -> None:
    """Stops after `patience` epochs without a new best."""
    rule = EarlyStopping(patience=2)
    actions = [rule.after_epoch(e, loss) for e, loss in enumerate([1.0, 0.9, 0.95, 0.92])]
    assert actions == [Action.CONTINUE, Action.CONTINUE, Action.CONTINUE, Action.STOP]


def test_constant_never_stops() -> None:
    """Constant keeps the rate and goes on whatever the loss does."""
    from components.train.schedule import ConstantSchedule

    schedule = ConstantSchedule(0.01)
    assert [schedule.after_epoch(e, 1.0 + e) for e in range(3)] == [Action.CONTINUE] * 3
    assert schedule.current_rate(7) == 0.01
