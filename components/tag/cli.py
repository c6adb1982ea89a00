"""`gallerytag tag`: the command-line adapter of bulk tagging."""

from __future__ import annotations

import tempfile

import click

from components.tag.policy import TagPolicy, policy_from_evaluation

DEFAULTS = TagPolicy()
EVALUATION_ARTIFACT = "evaluation/evaluation.json"  # where `gallerytag evaluate` logs it


def read_evaluation(where: str, tagger, tmp: str) -> dict:
    """evaluation.json of this very model: from its MLflow run ('model') or a file."""
    import json

    import mlflow

    from components.common import storage

    if where == "model":
        if not tagger.run_id:
            raise ValueError(f"{tagger.uri} has no MLflow run to read an evaluation from")
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=tagger.run_id, artifact_path=EVALUATION_ARTIFACT, dst_path=tmp
            )
        except Exception:
            raise ValueError(
                f"{tagger.uri} has not been evaluated yet (no {EVALUATION_ARTIFACT} on its "
                "run); run `gallerytag evaluate` first"
            ) from None
        return json.loads(storage.read_text(path))
    evaluation = json.loads(storage.read_text(where))
    if tagger.run_id and evaluation.get("run_id") not in (None, tagger.run_id):
        raise ValueError(
            f"{where} evaluates run {evaluation.get('run_id')}, not {tagger.uri} "
            f"(run {tagger.run_id}); its thresholds would not fit this model"
        )
    return evaluation


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("source")
@click.option("--model", "model_uri", required=True, help="models:/NAME@ALIAS, models:/NAME/N...")
@click.option("--out", required=True, help="Where tags go (local path or gs://).")
@click.option("--min-score", default=DEFAULTS.min_score, show_default=True,
              help="Top-1 probability needed for status 'auto'.")  # fmt: skip
@click.option("--min-margin", default=DEFAULTS.min_margin, show_default=True,
              help="Top-1 minus top-2 probability needed for status 'auto'.")  # fmt: skip
@click.option("--label-threshold", "label_thresholds", multiple=True, metavar="LABEL=P",
              help="Multi-label models: one label's cut-off (others: --min-score).")  # fmt: skip
@click.option("--thresholds-from", default=None,
              help="Take --min-score from an evaluation instead: 'model' (the evaluation "
              "logged on the model's MLflow run) or a path to its evaluation.json.")  # fmt: skip
@click.option("--shards", default=4, show_default=True, help="Number of tag files.")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "parquet"]),
              default="jsonl", show_default=True, help="Format of the tag files.")  # fmt: skip
@click.option("--incremental", is_flag=True,
              help="Keep the rows of images already tagged by this model version (same "
              "content hash) from the previous run in --out; only new or changed images "
              "are decoded and predicted.")  # fmt: skip
@click.option("--write-metadata", is_flag=True,
              help="Also merge the tag into each gs:// object's custom metadata "
              "(gallerytag-* keys; other keys are kept).")  # fmt: skip
@click.option("--copy-to", default=None,
              help="Also copy each image into DIR/<label>/ "
              "(uncertain ones: DIR/_review/<label>/).")  # fmt: skip
@click.option("--tracking-uri", default=None, help="MLflow server (default as for train).")
@click.pass_context
def tag(
    ctx: click.Context,
    source: str,
    model_uri: str,
    out: str,
    min_score: float,
    min_margin: float,
    label_thresholds: tuple[str, ...],
    thresholds_from: str | None,
    shards: int,
    output_format: str,
    incremental: bool,
    write_metadata: bool,
    copy_to: str | None,
    tracking_uri: str | None,
) -> None:
    """Tag every image under SOURCE (folder or gs:// prefix) with a model.
    Extra arguments go to Beam, e.g. --runner DataflowRunner."""
    from components.common.tracking import fetch_tagger, tracking
    from components.tag.pipeline import TagOutputs, run

    cutoffs = {}
    for pair in label_thresholds:
        label, sep, value = pair.rpartition("=")
        if not sep or not label:
            raise click.BadParameter(f"'{pair}' is not LABEL=P", param_hint="--label-threshold")
        cutoffs[label] = float(value)
    policy = TagPolicy(min_score, min_margin, DEFAULTS.top_k, cutoffs)
    outputs = TagOutputs(output_format, shards, incremental, write_metadata, copy_to)
    with tempfile.TemporaryDirectory(prefix="gallerytag-model-") as tmp:
        with tracking(tracking_uri):
            tagger = fetch_tagger(model_uri, tmp)
            if thresholds_from:
                policy = policy_from_evaluation(
                    read_evaluation(thresholds_from, tagger, tmp), DEFAULTS.top_k
                )
                click.echo(f"tag: auto when top-1 >= {policy.min_score} (from the evaluation)")
        summary = run(source, out, tagger, policy, outputs, beam_args=list(ctx.args))
    click.echo(
        f"tag: seen {summary.seen} = auto {summary.auto} + review {summary.review} + "
        f"rejected {summary.rejected} ({summary.images_per_second:.1f} images/s)"
    )
    if summary.carried:
        click.echo(f"  {summary.carried} unchanged images kept their previous tags")
    click.echo(
        f"tags in {summary.out}/tags-*.{output_format}, review queue {summary.out}/review.jsonl"
    )
