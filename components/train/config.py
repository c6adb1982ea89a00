"""Typed configuration of one training run; every field is logged to MLflow as a param."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    """How to fine-tune a tagger on an ingested dataset."""

    data: str = ""  # dataset directory written by `gallerytag ingest`
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"  # "imagenet", "none", or a local weights file
    workers: int = 1  # Horovod processes (horovodrun -np)
    batch_size: int = 32  # per worker
    # LP-FT: "probe" starts the head from a logistic regression on the frozen backbone's
    # features (the linear probe), so fine-tuning begins where a frozen model ends;
    # "random" starts it from scratch (then give it head epochs).
    head_init: str = "probe"
    head_epochs: int = 0  # phase 1: backbone frozen, only the head trains
    finetune_epochs: int = 0  # phase 2: top blocks unfrozen; 0 = sized from the dataset
    finetune_blocks: int = 16  # all of Lite0
    learning_rate: float = 1e-3  # head phase, per worker; scaled by the number of workers
    finetune_learning_rate: float = 1e-4  # per worker; scaled by the number of workers
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # cosine, plateau (the seed paper's) or constant
    max_decays: int = 3  # plateau: at most this many LR / 10 steps
    early_stopping_patience: int = 0  # epochs without improvement before stopping; 0 = off
    time_budget_minutes: float = 0.0  # stop before an epoch would end past it; 0 = none
    label_smoothing: float = 0.1
    fp16_allreduce: bool = False  # compress gradients to fp16 on the wire (multi-node GPUs)
    dropout: float = 0.2
    augment: bool = True  # random resized crop, flip and colour jitter (tfdata.augmentation)
    cache: bool = False  # keep decoded training images in memory after the first epoch
    seed: int = 42
    experiment: str = "gallerytag"
    registered_model: str = "gallerytag"
    checkpoint_dir: str = ""  # local or gs://; empty = $GALLERYTAG_HOME/checkpoints/<key>
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
        where = {"checkpoint_dir": "", "rank_stats_dir": ""}
        identity = json.dumps({**asdict(self), **where}, sort_keys=True)
        return hashlib.sha256(f"{dataset_hash}|{identity}".encode()).hexdigest()[:16]

    def __post_init__(self) -> None:
        if self.schedule not in ("plateau", "cosine", "constant"):
            raise ValueError(f"schedule must be plateau, cosine or constant, not {self.schedule!r}")
        if self.head_init not in ("probe", "random"):
            raise ValueError(f"head_init must be probe or random, not {self.head_init!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), not {self.label_smoothing}")
        if self.time_budget_minutes < 0:
            raise ValueError("time_budget_minutes must be >= 0 (0 = no budget)")

    def as_params(self) -> dict[str, str]:
        """Flat string params for MLflow."""
        return {key: str(value) for key, value in asdict(self).items()}
