"""The declared options of `gallerytag evaluate` and `gallerytag promote`. Light on purpose
(no numpy or scikit-learn import), so the CLI and the run file load fast."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common.settings import fraction, setting


@dataclass(frozen=True)
class SuspectConfig:
    """How sure the model and the neighbourhood must be before an image is flagged."""

    min_confidence: float = setting(
        0.8,
        "Flag a training image when the model contradicts its label this surely.",
        aliases=("--suspect-confidence",),
    )
    neighbours: int = setting(10, "Nearest neighbours (backbone embeddings) consulted.", minimum=1)
    max_own_label_share: float = setting(
        0.3, "Flag only when at most this share of the neighbours carries the image's label."
    )


@dataclass(frozen=True)
class EvaluateConfig:
    """What to compute and how much of it to show."""

    split: str = setting(
        "test", "Split to score.", choices=("test", "validation", "train"), kfp=False
    )
    k: int = setting(3, "Top-k accuracy to report (k >= 1).", minimum=1)
    target_precision: float = fraction(
        0.95,
        "Precision promised for auto tags: policy.json holds the lowest top-1 bar per label "
        "(else global) reaching it on the test split; `gallerytag tag` uses it by default.",
        open_minimum=True,
    )
    min_label_support: int = setting(
        30, "A label predicted this often on the test split gets its own auto bar.", minimum=1
    )
    gradcam_per_class: int = setting(
        2, "Grad-CAM panels per class in the report, for right and wrong each.", minimum=0
    )
    suspects: SuspectConfig = field(default_factory=SuspectConfig)
    suspect_splits: tuple[str, ...] = ("train", "validation")
    batch_size: int = 64
    probe: bool = setting(
        True, "Also fit and score the linear probe on the frozen backbone (the floor)."
    )
    # Not `precision`: option names are unique across the run file's sections (tag has one).
    score_precision: str = setting(
        "f32",
        "bf16: also score the model through the OpenVINO bf16 path of `gallerytag tag "
        "--precision bf16` and report what it costs (top-1/top-k, agreement, max |dp|) "
        "beside the f32 figures, which stay as they are.",
        choices=("f32", "bf16"),
        aliases=("--precision",),
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.target_precision <= 1.0:
            raise ValueError(f"target_precision must be in (0, 1], not {self.target_precision}")


@dataclass(frozen=True)
class GateConfig:
    """When a candidate counts as really better than the champion."""

    alias: str = setting("champion", "Registry alias the gate moves to a better model.")
    min_improvement: float = setting(
        0.0, "Top-1 gain over the champion needed (a tie never promotes)."
    )
    max_p_value: float = fraction(0.05, "McNemar's exact test on the same images; 1.0: off.")
    max_recall_drop: float = fraction(0.05, "Largest allowed drop of any class's recall.")
    min_class_support: int = setting(
        5, "Classes with fewer test images are too noisy to judge their recall.", minimum=1
    )
    absolute_floor: float = fraction(
        0.5, "Top-1 the first model needs when there is no champion yet."
    )
    beat_probe: bool = setting(
        True, "The first model must beat its own linear probe (frozen backbone)."
    )
