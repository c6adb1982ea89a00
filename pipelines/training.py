"""The training pipeline: fingerprint -> ingest (cached by the fingerprint) -> Horovod
training -> evaluation -> gate -> promotion only if the gate passed. Wiring only."""

from kfp import dsl

from pipelines import components


@dsl.pipeline(
    name="gallerytag-training",
    description="Ingest a labelled gallery, fine-tune with Horovod, evaluate, and promote the "
    "model to the registry alias only when it beats the current champion.",
)
def training_pipeline(
    source: str,
    corrections: str = "",
    tracking_uri: str = "http://mlflow.gallerytag.svc.cluster.local:5000",
    registered_model: str = "gallerytag",
    experiment: str = "gallerytag",
    image_size: int = 224,
    near_duplicate_distance: int = 10,
    backbone: str = "efficientnet_lite0",
    workers: int = 2,
    head_epochs: int = 0,
    finetune_epochs: int = 0,  # 0 = sized from the dataset
    batch_size: int = 32,
    launcher: str = "mpijob",
    mpijob_image: str = components.IMAGE,
    gpus_per_worker: int = 1,
    checkpoint_root: str = "",
    mpijob_options: dict = {},  # noqa: B006  (KFP pipeline parameters are declared this way)
    alias: str = "champion",
    min_improvement: float = 0.0,
    max_recall_drop: float = 0.05,
    absolute_floor: float = 0.5,
) -> None:
    """Train a tagger and promote it if it is really better. `corrections`: comma-separated
    corrections.jsonl locations (gallerytag review), applied at ingest; empty for none."""
    fingerprint = components.fingerprint_source(source=source, corrections=corrections)
    fingerprint.set_caching_options(False)  # must look at the source every time
    ingested = components.ingest(
        source=source,
        corrections=corrections,
        fingerprint=fingerprint.output,
        image_size=image_size,
        near_duplicate_distance=near_duplicate_distance,
    )
    ingested.set_caching_options(True)  # same fingerprint and options: reuse the dataset
    trained = components.train(
        dataset=ingested.outputs["dataset"],
        tracking_uri=tracking_uri,
        registered_model=registered_model,
        experiment=experiment,
        backbone=backbone,
        workers=workers,
        head_epochs=head_epochs,
        finetune_epochs=finetune_epochs,
        batch_size=batch_size,
        launcher=launcher,
        mpijob_image=mpijob_image,
        gpus_per_worker=gpus_per_worker,
        checkpoint_root=checkpoint_root,
        mpijob_options=mpijob_options,
    )
    trained.set_caching_options(False)
    evaluated = components.evaluate(
        model_uri=trained.output, dataset=ingested.outputs["dataset"], tracking_uri=tracking_uri
    )
    evaluated.set_caching_options(False)
    verdict = components.gate(
        model_uri=trained.output,
        dataset=ingested.outputs["dataset"],
        tracking_uri=tracking_uri,
        alias=alias,
        min_improvement=min_improvement,
        max_recall_drop=max_recall_drop,
        absolute_floor=absolute_floor,
    ).after(evaluated)
    verdict.set_caching_options(False)
    with dsl.If(verdict.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
        promoted = components.promote(
            model_uri=trained.output, tracking_uri=tracking_uri, alias=alias
        )
        promoted.set_caching_options(False)
