"""Typed configuration of one training run; every field is logged to MLflow as a param."""

from __future__ import annotations

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
    head_epochs: int = 3  # phase 1: backbone frozen, only the head trains
    finetune_epochs: int = 2  # phase 2: top blocks unfrozen at a lower learning rate
    finetune_blocks: int = 2
    learning_rate: float = 1e-3  # per worker; scaled by the number of workers
    finetune_learning_rate: float = 1e-4
    warmup_epochs: float = 1.0
    dropout: float = 0.2
    augment: bool = True
    seed: int = 42
    experiment: str = "gallerytag"
    registered_model: str = "gallerytag"

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

    def as_params(self) -> dict[str, str]:
        """Flat string params for MLflow."""
        return {key: str(value) for key, value in asdict(self).items()}
