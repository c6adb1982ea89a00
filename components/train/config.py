"""Typed configuration of one training run; every field is logged to MLflow as a param."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from components.common.settings import setting


@dataclass
class TrainConfig:
    """How to fine-tune a tagger on an ingested dataset."""

    data: str = ""  # dataset directory written by `gallerytag ingest` (an input, not an option)
    backbone: str = setting(
        "efficientnet_lite0",
        "Backbone: efficientnet_lite0/1/2 (offline ImageNet weights), mobilenet_v2, ...",
    )
    weights: str = setting("imagenet", "imagenet, none, or a local weights file.")
    workers: int = setting(1, "Horovod processes (horovodrun -np).", minimum=1)
    batch_size: int = setting(32, "Images per step, per worker.", minimum=1)
    # LP-FT: "probe" starts the head from a logistic regression on the frozen backbone's
    # features (the linear probe), so fine-tuning begins where a frozen model ends.
    head_init: str = setting(
        "probe",
        "probe: start the head from a linear probe on frozen features (LP-FT); random: "
        "from scratch (then give it head epochs).",
        choices=("probe", "random"),
    )
    head_epochs: int = setting(
        0, "Head-only epochs on the frozen backbone before fine-tuning.", minimum=0
    )
    finetune_epochs: int = setting(
        0, "0 = sized from the dataset (~240 optimiser steps, 4-30 epochs).", minimum=0
    )
    finetune_blocks: int = setting(16, "Top backbone blocks unfrozen for fine-tuning.", minimum=0)
    learning_rate: float = setting(
        1e-3, "Head phase, per worker (Horovod scales it by the number of workers)."
    )
    # Not 3e-4: its lead on one worker was within noise, and x 2 workers it once lost a whole
    # class of the end-to-end test's training (docs/benchmarks.md, issue 14).
    finetune_learning_rate: float = setting(
        1e-4, "Fine-tuning phase, per worker (scaled by the number of workers)."
    )
    warmup_epochs: float = setting(
        1.0,
        "Epochs over which the rate ramps linearly from the per-worker rate to rate x workers "
        "(large-batch warm-up); no effect with one worker.",
        minimum=0,
    )
    schedule: str = setting(
        "cosine",
        "cosine: decay over the phase; plateau: LR / 10 when validation loss worsens, stop "
        "when that no longer helps; constant.",
        choices=("cosine", "plateau", "constant"),
    )
    max_decays: int = setting(3, "plateau: at most this many LR / 10 steps.", minimum=0)
    early_stopping_patience: int = setting(
        0, "Epochs without improvement before stopping; 0 = off.", minimum=0
    )
    time_budget_minutes: float = setting(
        0.0,
        "Minutes; no epoch starts that would end past it (0 = no budget).",
        aliases=("--time-budget",),
        minimum=0,
    )
    label_smoothing: float = setting(0.1, "Label smoothing of the loss, in [0, 1).", minimum=0)
    # WiSE-FT (components/train/wise.py): measured in docs/benchmarks.md (issue 14).
    wise_alpha: float = setting(
        0.75,
        "WiSE-FT: ship (1 - a) x the fine-tuning's start + a x its final weights; "
        "1 = the plain fine-tuned weights.",
        minimum=0,
        maximum=1,
    )
    fp16_allreduce: bool = setting(
        False, "Compress gradients to fp16 for the allreduce (multi-node GPUs)."
    )
    dropout: float = setting(0.2, "Dropout before the head.", minimum=0)
    augment: bool = setting(
        True, "Random resized crop, flip and colour jitter (tfdata.augmentation)."
    )
    cache: bool = setting(False, "Keep decoded training images in memory after the first epoch.")
    seed: int = setting(42, "Seed of the initialisation, shuffling and augmentation.")
    experiment: str = setting("gallerytag", "MLflow experiment of the run.")
    registered_model: str = setting(
        "gallerytag", "Model Registry name to register the trained model under."
    )
    run_name: str = setting(
        "", "MLflow run name (default: <registered model>-<dataset folder>-<UTC time>)."
    )
    checkpoint_dir: str = setting(
        "",
        "Local or gs:// folder for per-epoch checkpoints (default: under $GALLERYTAG_HOME, "
        "keyed by config and dataset; reruns resume).",
        kfp=False,
    )
    rank_stats_dir: str = ""  # if set, each rank appends its own epoch figures here (JSONL)

    def to_json(self) -> str:
        """Serialise for the worker processes and for MLflow."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of to_json; unknown keys are an error, not silently dropped."""
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**raw)

    def checkpoint_key(self, dataset_hash: str) -> str:
        """A folder name equal for a rerun of the same training on the same data, only then."""
        where = {"checkpoint_dir": "", "rank_stats_dir": "", "run_name": ""}
        identity = json.dumps({**asdict(self), **where}, sort_keys=True)
        return hashlib.sha256(f"{dataset_hash}|{identity}".encode()).hexdigest()[:16]

    def __post_init__(self) -> None:
        if self.schedule not in ("plateau", "cosine", "constant"):
            raise ValueError(f"schedule must be plateau, cosine or constant, not {self.schedule!r}")
        if self.head_init not in ("probe", "random"):
            raise ValueError(f"head_init must be probe or random, not {self.head_init!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), not {self.label_smoothing}")
        if not 0.0 <= self.wise_alpha <= 1.0:
            raise ValueError(f"wise_alpha must be in [0, 1] (1 = off), not {self.wise_alpha}")
        if self.time_budget_minutes < 0:
            raise ValueError("time_budget_minutes must be >= 0 (0 = no budget)")

    def as_params(self) -> dict[str, str]:
        """Flat string params for MLflow."""
        return {key: str(value) for key, value in asdict(self).items()}
