"""How long to fine-tune, sized from the dataset instead of fixed epoch counts (pure).

A gallery of 300 images and one of 30,000 need very different epoch counts for the same
amount of learning, so the recipe fixes the number of optimiser steps (what the
benchmark in docs/benchmarks.md measured) and derives epochs from it, within bounds; the
time budget then caps the wall clock.
"""

from __future__ import annotations

import math

TARGET_STEPS = 240  # optimiser steps of the fine-tuning phase (global batches)
MIN_EPOCHS, MAX_EPOCHS = 4, 30


def auto_epochs(train_images: int, global_batch: int, target_steps: int = TARGET_STEPS) -> int:
    """Fine-tuning epochs for `train_images` at `global_batch` images per step."""
    steps_per_epoch = max(1, train_images // max(1, global_batch))
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(target_steps / steps_per_epoch)))


def over_budget(elapsed_s: float, last_epoch_s: float, budget_minutes: float) -> bool:
    """Whether another epoch like the last one would end past the time budget (0 = none)."""
    if budget_minutes <= 0:
        return False
    return elapsed_s + last_epoch_s > budget_minutes * 60.0
