"""The tagging pipeline: tag a bucket prefix with the champion model (nightly or ad hoc)."""

from kfp import dsl

from pipelines import components


@dsl.pipeline(
    name="gallerytag-tagging",
    description="Tag every image under a prefix with the registry's champion; uncertain "
    "images go to the review queue.",
)
def tagging_pipeline(
    source: str,
    out: str,
    model_uri: str = "models:/gallerytag@champion",
    tracking_uri: str = "http://mlflow.gallerytag.svc.cluster.local:5000",
    output_format: str = "jsonl",
    incremental: bool = True,
    min_score: float = -1.0,
    min_margin: float = -1.0,
) -> None:
    """Tag the source; nightly runs are incremental (unchanged images keep their rows).
    Negative min_score / min_margin: the auto/review bars of the model's own evaluation
    (policy.json); set either to choose bars by hand."""
    tagged = components.tag(
        source=source,
        model_uri=model_uri,
        tracking_uri=tracking_uri,
        out=out,
        output_format=output_format,
        incremental=incremental,
        min_score=min_score,
        min_margin=min_margin,
    )
    tagged.set_caching_options(False)  # new uploads appear under the same prefix
