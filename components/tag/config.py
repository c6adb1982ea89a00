"""The declared options of `gallerytag tag`: how the auto/review policy is chosen and what
the job writes. Light on purpose (no Beam import), so the CLI and the run file load fast."""

from __future__ import annotations

from dataclasses import dataclass

from components.common.settings import fraction, setting

NAMESPACE = "gallerytag.tag"  # of tagging's Beam metrics: counters and live progress


@dataclass(frozen=True)
class TagConfig:
    """Where the auto/review bars come from, and how rows list their labels."""

    min_score: float | None = fraction(
        None,
        "Set the auto bar by hand: top-1 probability needed for 'auto' (unset: the model's "
        "evaluation decides; with only --min-margin: 0.5).",
    )
    min_margin: float | None = fraction(
        None,
        "Set the auto bar by hand: top-1 minus top-2 probability needed for 'auto' (with "
        "only --min-score: 0.1).",
    )
    label_thresholds: dict = setting(  # noqa: RUF009 (setting() makes a default_factory field)
        {},
        "Multi-label models: one label's cut-off, LABEL=P, repeatable (others: --min-score).",
        aliases=("--label-threshold",),
        metavar="LABEL=P",
    )
    thresholds_from: str = setting(
        "model",
        "Where the auto/review policy comes from when no bar is set by hand: 'model' "
        "(policy.json of the evaluation logged on the model's MLflow run) or an evaluation "
        "folder / policy.json. A model never evaluated sends every image to review.",
    )
    top_k: int = setting(3, "How many labels (with scores) each row lists.", minimum=1)
    runtime: str = setting(
        "auto",
        "What runs the model: 'auto' is OpenVINO on CPU (same scores as Keras to 1e-4, about "
        "twice as fast) when it loads, else Keras (components/tag/runtime.py).",
        choices=("auto", "keras", "openvino"),
    )
    precision: str = setting(
        "f32",
        "bf16: OpenVINO at reduced precision (faster on CPUs with AMX/AVX512-BF16; scores "
        "differ from Keras by up to ~0.03: measure with evaluate first).",
        choices=("f32", "bf16"),
    )

    def __post_init__(self) -> None:
        for name in ("min_score", "min_margin"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {value}")


@dataclass(frozen=True)
class TagOutputs:
    """What the job writes besides the tag rows' default JSONL shards."""

    format: str = setting(
        "jsonl",
        "Format of the tag files (layout: components/common/tag_rows.py; parquet: one folder "
        "per row kind, tags/ review/ rejected/, each readable as one dataset).",
        choices=("jsonl", "parquet"),
    )
    shards: int = setting(
        4, "Most files per row kind; fewer for small runs (see --min-rows-per-shard).", minimum=1
    )
    incremental: bool = setting(
        False,
        "Keep the rows of images already tagged by this model version (same content hash) "
        "from the previous run in --out; only new or changed images are decoded and predicted.",
    )
    write_metadata: bool = setting(
        False,
        "Also merge the tag into each gs:// object's custom metadata (gallerytag-* keys; "
        "other keys are kept).",
    )
    copy_to: str | None = setting(
        None,
        "Also copy each image into DIR/<label>/ (uncertain ones: DIR/_review/<label>/).",
        metavar="DIR",
    )
    min_rows_per_shard: int = setting(
        10_000,
        "A file per this many rows begun, up to --shards, so small runs make no empty files.",
        minimum=1,
    )

    def __post_init__(self) -> None:
        if self.format not in ("jsonl", "parquet"):
            raise ValueError(f"format must be jsonl or parquet, not {self.format!r}")
        if self.shards < 1:
            raise ValueError("shards must be at least 1")
        if self.min_rows_per_shard < 1:
            raise ValueError("min_rows_per_shard must be at least 1")
