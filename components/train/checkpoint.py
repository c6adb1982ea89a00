"""Per-epoch training checkpoints on any storage URL, so a killed training resumes.

Rank 0 writes `model.npz`, `best.npz` (best weights, for the plateau rule), `start.npz`
(the fine-tuning's start, for WiSE-FT) and `optimizer.npz` (numpy arrays in Keras'
deterministic variable order), then `state.json` last: a checkpoint without it is ignored.
A rerun of the same training finds the folder from the config and continues at the next
epoch.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from components.common import storage

STATE = "state.json"
WEIGHTS = "model.npz"
BEST = "best.npz"
START = "start.npz"
OPTIMIZER = "optimizer.npz"


@dataclass
class TrainingState:
    """Where a training is: enough to continue it exactly after a kill."""

    run_id: str | None = None
    phase: str = "head"  # phase of the last completed epoch
    phase_epochs_done: int = 0
    epochs_done: int = 0  # over all phases
    global_step: int = 0
    schedule: dict = field(default_factory=dict)
    phase_finished: bool = False  # the schedule stopped the phase early
    has_best: bool = False
    best_loss: float | None = None  # validation loss of the best weights
    # The last finished epoch's metrics: a kill between the checkpoint and the MLflow call
    # leaves them unlogged, and the resumed run logs them (once) from here.
    last_epoch_metrics: dict = field(default_factory=dict)


def load(folder: str) -> TrainingState | None:
    """The saved state, or None when there is no complete checkpoint."""
    marker = storage.join(folder, STATE)
    if not storage.exists(marker):
        return None
    return TrainingState(**json.loads(storage.read_text(marker)))


def _put_arrays(arrays: list[np.ndarray], url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="gallerytag-ckpt-") as tmp:
        local = Path(tmp, "arrays.npz")
        np.savez(local, *arrays)
        storage.copy(str(local), url)


def _get_arrays(url: str) -> list[np.ndarray]:
    with np.load(io.BytesIO(storage.read_bytes(url))) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def save(
    folder: str,
    state: TrainingState,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    best_weights: list[np.ndarray] | None,
    start_weights: list[np.ndarray] | None = None,
) -> None:
    """Write a checkpoint; state.json goes last so a half-written one is never loaded."""
    storage.makedirs(folder)
    _put_arrays(model.get_weights(), storage.join(folder, WEIGHTS))
    _put_arrays([np.asarray(v) for v in optimizer.variables], storage.join(folder, OPTIMIZER))
    if best_weights is not None:
        _put_arrays(best_weights, storage.join(folder, BEST))
    if start_weights is not None:
        _put_arrays(start_weights, storage.join(folder, START))
    storage.write_text(storage.join(folder, STATE), json.dumps(asdict(state), indent=2))


def load_weights(folder: str, best: bool = False) -> list[np.ndarray]:
    """The saved current (or best) weights, for `model.set_weights`."""
    return _get_arrays(storage.join(folder, BEST if best else WEIGHTS))


def load_start_weights(folder: str) -> list[np.ndarray] | None:
    """The fine-tuning's saved start weights (WiSE-FT), or None when none were saved."""
    url = storage.join(folder, START)
    return _get_arrays(url) if storage.exists(url) else None


def restore_optimizer(folder: str, optimizer: keras.optimizers.Optimizer) -> None:
    """Load optimizer slots saved in the same phase (the optimizer must be built)."""
    saved = _get_arrays(storage.join(folder, OPTIMIZER))
    if len(saved) != len(optimizer.variables):
        raise ValueError(
            f"checkpoint in {folder} has {len(saved)} optimizer variables, the optimizer has "
            f"{len(optimizer.variables)}; delete the folder to start the training over"
        )
    for variable, value in zip(optimizer.variables, saved, strict=True):
        variable.assign(value)


def clear(folder: str) -> None:
    """Remove a finished training's checkpoint (a rerun then starts a new training)."""
    if storage.exists(folder):
        storage.delete(folder, recursive=True)
