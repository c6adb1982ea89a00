"""The tagging pipeline: tag a bucket prefix with the champion model (nightly or ad hoc).
Its parameters are the tag step's declared options (pipelines/parameters.py)."""

import inspect
from typing import Any

from components.tag.config import TagConfig, TagOutputs
from pipelines import components
from pipelines.parameters import ClusterConfig, declared_pipeline, section

REQUIRED = inspect.Parameter.empty
TRAINING_ONLY = ("launcher", "mpijob_image", "gpus_per_worker", "checkpoint_root", "mpijob_options")
SECTIONS = [
    (ClusterConfig, TRAINING_ONLY),
    (TagConfig, ()),
    (TagOutputs, ()),
]


@declared_pipeline(
    name="gallerytag-tagging",
    description="Tag every image under a prefix with the registry's champion; uncertain "
    "images go to the review queue. Nightly runs pass incremental=true (unchanged images "
    "keep their rows).",
    sections=SECTIONS,
    leading=[
        ("source", str, REQUIRED, "Images to tag: a folder or gs:// prefix."),
        ("out", str, REQUIRED, "Where the tags go (local path or gs://)."),
        ("model_uri", str, "models:/gallerytag@champion", "The model: models:/NAME@ALIAS."),
    ],
)
def tagging_pipeline(params: dict[str, Any]) -> None:
    """Tag the source with the model, its own evaluation's auto/review bars by default."""
    tagged = components.tag(
        source=params["source"],
        model_uri=params["model_uri"],
        tracking_uri=params["tracking_uri"],
        out=params["out"],
        tag_config=section(params, TagConfig),
        tag_outputs=section(params, TagOutputs),
    )
    tagged.set_caching_options(False)  # new uploads appear under the same prefix
