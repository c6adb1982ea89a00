"""Epoch-level learning-rate schedules as small, serialisable state machines (pure Python).

`PlateauSchedule` is the seed paper's: when validation loss stops improving, go back to the
best weights and divide the learning rate by 10; stop when a decay brings no improvement.
Each schedule's state goes into checkpoints so a resumed training continues it exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum


class Action(StrEnum):
    """What the training loop does after an epoch."""

    CONTINUE = "continue"  # keep going (this epoch may be the new best)
    RESTORE_AND_DECAY = "restore_and_decay"  # reload the best weights, continue at a lower LR
    STOP = "stop"  # reload the best weights and finish


class Resumable:
    """A dataclass whose fields are its whole state: checkpointed as they are."""

    def state(self) -> dict:
        """Everything needed to resume."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class PlateauSchedule(Resumable):
    """Divide the LR by `1 / factor` on a plateau, restoring the best weights; stop when a
    decay did not help or after `max_decays` decays."""

    learning_rate: float
    factor: float = 0.1
    max_decays: int = 3
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = -1
    decays: int = 0
    improved_since_decay: bool = True

    def current_rate(self, epoch: int) -> float:
        """Learning rate for `epoch` (constant between decays)."""
        return self.learning_rate

    def after_epoch(self, epoch: int, validation_loss: float) -> Action:
        """Update with one epoch's validation loss and say what to do next."""
        if self.best is None or validation_loss < self.best - self.min_delta:
            self.best, self.best_epoch = validation_loss, epoch
            self.improved_since_decay = True
            return Action.CONTINUE
        if self.decays > 0 and not self.improved_since_decay:
            return Action.STOP
        if self.decays >= self.max_decays:
            return Action.STOP
        self.decays += 1
        self.learning_rate *= self.factor
        self.improved_since_decay = False
        return Action.RESTORE_AND_DECAY


@dataclass
class ConstantSchedule(Resumable):
    """The same learning rate every epoch; never stops on its own."""

    learning_rate: float

    def current_rate(self, epoch: int) -> float:
        """The constant rate."""
        return self.learning_rate

    def after_epoch(self, epoch: int, validation_loss: float) -> Action:
        """Always continue."""
        return Action.CONTINUE


@dataclass
class CosineSchedule(Resumable):
    """Cosine decay from `learning_rate` to `min_rate` over `epochs` epochs."""

    learning_rate: float
    epochs: int
    min_rate: float = 0.0

    def current_rate(self, epoch: int) -> float:
        """Learning rate for `epoch` (0-based within the phase)."""
        progress = min(epoch, self.epochs) / max(self.epochs, 1)
        return self.min_rate + 0.5 * (self.learning_rate - self.min_rate) * (
            1 + math.cos(math.pi * progress)
        )

    def after_epoch(self, epoch: int, validation_loss: float) -> Action:
        """Cosine never stops early on its own."""
        return Action.CONTINUE


@dataclass
class EarlyStopping(Resumable):
    """Stop after `patience` epochs without improvement; keep the best weights."""

    patience: int = 3
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = -1
    waited: int = 0

    def after_epoch(self, epoch: int, validation_loss: float) -> Action:
        """Update with one epoch's validation loss."""
        if self.best is None or validation_loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.waited = validation_loss, epoch, 0
            return Action.CONTINUE
        self.waited += 1
        return Action.STOP if self.waited >= self.patience else Action.CONTINUE
