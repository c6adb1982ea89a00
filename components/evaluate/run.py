"""Evaluate a tagger on a dataset: metrics with intervals, threshold table, calibration,
Grad-CAM panels and label-noise suspects; write them (JSON + HTML report) and log them to the
model's MLflow run. The maths lives in core / suspects / gradcam, the predictions in
scoring; this module wires them."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from components.common import dataset, progress, storage
from components.common.policy_file import POLICY_FILE
from components.common.tracking import TaggerSpec, fetch_tagger
from components.evaluate import report
from components.evaluate.config import EvaluateConfig
from components.evaluate.floor import ProbeFloor, measure_probe
from components.evaluate.scoring import (
    Predictions,
    compute_metrics,
    panel_keeper,
    precision_cost,
    predict,
    reduced_scorer,
    suspect_keeper,
)
from components.evaluate.suspects import find_suspects

EVALUATION_FILE = "evaluation.json"
SUSPECTS_FILE = "suspects.jsonl"
PREDICTIONS_FILE = "predictions.json"  # per-image labels and top-1, for the gate to reuse
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class EvaluationResult:
    """Headline figures (the full set is in the JSON file) and where the outputs went."""

    model_uri: str
    dataset_hash: str
    images: int
    top1: float
    topk: float
    k: int
    out_dir: str
    report: str
    probe_top1: float | None = None  # None when the probe could not be measured
    probe_note: str | None = None  # why not
    reduced: dict | None = None  # precision_cost's figures, with --precision bf16
    metrics: dict[str, float] = field(default_factory=dict)  # metric_values()


def check_compatible(tagger: TaggerSpec, manifest: dataset.Manifest, dataset_dir: str) -> None:
    """The model must know the dataset's labels and image size."""
    if tagger.multi_label:
        raise ValueError(f"{tagger.uri} is multi-label; evaluation covers single-label taggers")
    if tagger.labels != manifest.labels:
        raise dataset.DatasetError(
            f"model {tagger.uri} knows labels {tagger.labels} but {dataset_dir} has "
            f"{manifest.labels}; evaluate on the dataset the model was trained for"
        )
    if tagger.image_size != manifest.image_size:
        raise dataset.DatasetError(
            f"model {tagger.uri} expects {tagger.image_size}px images, the dataset has "
            f"{manifest.image_size}px; re-ingest with --image-size {tagger.image_size}"
        )


def require_split(manifest: dataset.Manifest, dataset_dir: str, split: str) -> None:
    """A clear error instead of metrics over nothing."""
    if manifest.split_size(split) == 0:
        raise dataset.DatasetError(
            f"{dataset_dir} has no '{split}' images to evaluate on; re-ingest with a non-zero "
            f"{split} ratio or more images"
        )


def block_prefixes(backbone: str) -> tuple[str, ...]:
    """The backbone's block names from the registry (none for a backbone it does not know:
    Grad-CAM then explains the final feature map)."""
    from models.registry import BACKBONES

    spec = BACKBONES.get(backbone)
    return spec.block_prefixes if spec else ()


def gradcam_panels(
    model, predictions: Predictions, names: list[str], prefixes: tuple[str, ...] = ()
) -> tuple[list[dict], dict]:
    """Grad-CAM overlays for the kept test images, ordered by class, and which feature map
    they explain ({layer, cells})."""
    from components.evaluate.gradcam import grad_cam_with_layer, overlay

    rows = sorted(predictions.images)
    if not rows:
        return [], {}
    images = np.stack([predictions.images[row] for row in rows]).astype(np.float32)
    predicted = predictions.probabilities[rows].argmax(axis=1)
    heatmaps, layer, cells = grad_cam_with_layer(model, images, predicted, prefixes)
    panels = []
    for row, image, heatmap, guess in zip(rows, images, heatmaps, predicted, strict=True):
        panels.append(
            {
                "label": names[predictions.labels[row]],
                "predicted": names[guess],
                "confidence": float(predictions.probabilities[row, guess]),
                "correct": bool(guess == predictions.labels[row]),
                "uri": predictions.uris[row],
                "png": report.png_data_uri(overlay(image.astype(np.uint8), heatmap)),
                "link": report.link_for(predictions.uris[row]),
            }
        )
    explained = {"layer": layer, "cells": f"{cells[0]}x{cells[1]}"}
    return sorted(panels, key=lambda p: (p["label"], not p["correct"])), explained


def suspects_of(model, dataset_dir, manifest, names, config: EvaluateConfig):
    """Label-noise suspects among the training / validation images, and how many were read."""
    files = [
        f for s in config.suspect_splits for f in dataset.shard_paths(dataset_dir, manifest, s)
    ]
    if not files:
        return [], 0
    from components.common import tfdata  # TensorFlow loads only when data is read

    batches = tfdata.read_in_order(files, manifest.image_size, config.batch_size)
    total = sum(manifest.split_size(split) for split in config.suspect_splits)
    shown = progress.Progress("evaluate suspects", "images", total)
    seen = predict(model, batches, suspect_keeper(config.suspects), shown)
    rows = find_suspects(seen.embeddings, seen.probabilities, seen.labels, names, config.suspects)
    for row in rows:
        row["uri"] = seen.uris[row["index"]]
        pixels = seen.images.get(row.pop("index"))
        row["png"] = report.png_data_uri(pixels) if pixels is not None else None
        row["link"] = report.link_for(row["uri"])
    return rows, len(seen.labels)


def gallerytag_version() -> str:
    """The installed gallerytag's version (the report says which code made it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gallerytag")
    except PackageNotFoundError:
        return "unknown (not installed)"


def run_link(run_id: str | None) -> str | None:
    """The MLflow UI page of a run, when the tracking server is an http(s) one."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not run_id or not uri.startswith(("http://", "https://")):
        return None
    from components.common.lineage import run_url  # opens in the UI's model-training view

    experiment = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return run_url(uri, experiment, run_id)


def training_history(run_id: str | None) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch training metrics (loss, accuracy and their val_ twins) of the model's run,
    from MLflow's metric history; empty without a run."""
    import mlflow

    if not run_id:
        return {}
    client = mlflow.MlflowClient()
    history = {}
    for metric in report.TRAINING_METRICS:
        for key in (metric, f"val_{metric}"):
            points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            history[key] = [(m.step, m.value) for m in points]
    return history


def data_quality(dataset_dir: str, manifest: dataset.Manifest) -> dict:
    """What ingest kept and dropped (from the manifest and duplicates.jsonl): counts,
    rejections by reason, duplicates by kind and those of groups whose copies carry
    different labels, images per label and split, corrections applied."""
    kinds: dict[str, int] = {}
    conflicts = 0
    duplicates = storage.join(dataset_dir, "duplicates.jsonl")
    if storage.exists(duplicates):
        with storage.open_file(duplicates, "r") as stream:  # streamed: it can be long
            for line in stream:
                if line.strip():
                    row = json.loads(line)
                    kinds[row.get("kind", "?")] = kinds.get(row.get("kind", "?"), 0) + 1
                    conflicts += bool(row.get("label_conflict"))
    splits = ("train", "validation", "test")
    balance = [
        {"label": label, **{s: manifest.counts.get(s, {}).get(label, 0) for s in splits}}
        for label in manifest.labels
    ]
    totals = [row["train"] + row["validation"] + row["test"] for row in balance]
    return {
        "totals": manifest.totals,
        "rejected_reasons": dict(sorted(manifest.rejected_reasons.items(), key=lambda kv: -kv[1])),
        "duplicate_kinds": kinds,
        "duplicate_label_conflicts": conflicts,
        "balance": balance,
        "imbalance": (max(totals) / min(totals)) if totals and min(totals) > 0 else None,
        "review": manifest.review,
        "warnings": manifest.warnings,
        "source": manifest.source,
    }


MAX_METRIC_KEY = 250  # MLflow refuses longer metric names


def metric_key(text: str) -> str:
    """An MLflow-safe metric name: odd characters replaced; a name over 250 characters is
    cut and given a digest of the whole, so two long labels never share a key."""
    import hashlib

    key = re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)
    if len(key) <= MAX_METRIC_KEY:
        return key
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{key[: MAX_METRIC_KEY - 13]}.{digest}"


def metric_values(metrics: dict, split: str) -> dict[str, float]:
    """The evaluation's figures as flat metrics (MLflow's and the KFP step's names)."""
    values = {
        f"{split}_top1": metrics["top1"]["value"],
        f"{split}_top1_ci_low": metrics["top1"]["low"],
        f"{split}_top1_ci_high": metrics["top1"]["high"],
        f"{split}_top{metrics['k']}": metrics[f"top{metrics['k']}"]["value"],
        f"{split}_macro_f1": metrics["averages"]["macro"]["f1"],
        f"{split}_ece": metrics["ece"],
    }
    probe = metrics.get("probe") or {}
    if "top1" in probe:
        values[f"{split}_top1_probe"] = probe["top1"]["value"]
        values[f"{split}_top1_probe_ci_low"] = probe["top1"]["low"]
        values[f"{split}_top1_probe_ci_high"] = probe["top1"]["high"]
        values[f"{split}_top1_gain_over_probe"] = metrics["gain_over_probe"]
    for row in metrics["per_class"]:
        values[metric_key(f"{split}_recall.{row['label']}")] = row["recall"]
    reduced = metrics.get("reduced_precision")
    if reduced and not reduced["fell_back"]:  # f32 figures under a bf16 name would mislead
        p, k = reduced["precision"], metrics["k"]
        values |= {
            f"{split}_top1_{p}": reduced["top1"]["value"],
            f"{split}_top{k}_{p}": reduced[f"top{k}"]["value"],
            f"{split}_top1_{p}_difference": reduced["top1_difference"],
            f"{split}_top1_{p}_agreement": reduced["top1_agreement"],
            f"{split}_{p}_max_abs_dp": reduced["max_abs_dp"],
        }
    return values


def log_to_mlflow(tagger: TaggerSpec, values: dict[str, float], out_dir: str, data=None) -> None:
    """Figures (`metric_values`) as metrics on the model's training run, linked to the
    logged model and the dataset they were measured on; the files as the run's artifacts;
    the policy also into the logged model, where its image pyfunc reads it."""
    import mlflow

    from components.common import lineage, serving

    with mlflow.start_run(run_id=tagger.run_id):
        if data is not None:
            lineage.log_dataset_input(data, "evaluation")
        mlflow.log_metrics(values, model_id=tagger.model_id, dataset=data)
        for name in (EVALUATION_FILE, SUSPECTS_FILE, REPORT_FILE, POLICY_FILE, PREDICTIONS_FILE):
            mlflow.log_artifact(storage.local_copy(storage.join(out_dir, name)), "evaluation")
    if tagger.model_id:
        serving.attach_policy(
            tagger.model_id, storage.local_copy(storage.join(out_dir, POLICY_FILE))
        )


def evaluate(
    model_uri: str, dataset_dir: str, out_dir: str, config: EvaluateConfig = EvaluateConfig()
) -> EvaluationResult:
    """Evaluate, write evaluation.json / suspects.jsonl / report.html to `out_dir`, and log
    them to the model's MLflow run when it has one."""
    manifest = dataset.read_manifest(dataset_dir)
    require_split(manifest, dataset_dir, config.split)
    names = manifest.labels
    with tempfile.TemporaryDirectory(prefix="gallerytag-eval-") as tmp:
        tagger = fetch_tagger(model_uri, tmp)
        check_compatible(tagger, manifest, dataset_dir)
        model = tagger.load()
        # Compiled while the IR (downloaded with the version, or exported here) is on disk.
        lowered = reduced_scorer(tagger, config.score_precision, tmp)
    files = dataset.shard_paths(dataset_dir, manifest, config.split)
    from components.common import tfdata  # TensorFlow loads only when data is read

    batches = tfdata.read_in_order(files, manifest.image_size, config.batch_size)
    shown = progress.Progress(
        f"evaluate {config.split}", "images", manifest.split_size(config.split)
    )
    keep = panel_keeper(len(names), config.gradcam_per_class)
    test = predict(model, batches, keep, shown, lowered)
    metrics = compute_metrics(test, names, config)
    suspects, suspect_images = suspects_of(model, dataset_dir, manifest, names, config)
    floor = (
        measure_probe(
            tagger.backbone, tagger.weights, dataset_dir, manifest, config.split, config.k
        )
        if config.probe
        else ProbeFloor(tagger.backbone, unavailable="not measured (probe switched off)")
    )
    # What evaluation.json holds; the report shows the same plus figures and images.
    summary = {key: value for key, value in metrics.items() if not key.startswith("_")} | {
        "schema_version": 1,
        "model_uri": model_uri,
        "model_version": tagger.version,
        "run_id": tagger.run_id,
        "dataset_hash": manifest.dataset_hash,
        "split": config.split,
        "suspects": len(suspects),
        "probe": floor.as_dict(),
        "gain_over_probe": (
            round(metrics["_top1"].value - floor.top1.value, 6) if floor.top1 else None
        ),
        "precision": config.score_precision,
        "reduced_precision": precision_cost(test, lowered, config.k) if lowered else None,
    }
    panels, explained = gradcam_panels(model, test, names, block_prefixes(tagger.backbone))
    history = training_history(tagger.run_id)
    quality = data_quality(dataset_dir, manifest)
    context = summary | {
        "dataset_dir": dataset_dir,
        "run_link": run_link(tagger.run_id),
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "gallerytag_version": gallerytag_version(),
        "training_png": report.training_figure(history),
        "epochs": max((len(points) for points in history.values()), default=0),
        "quality": quality,
        "balance_png": report.label_balance_figure(manifest.counts, names),
        "calibration_rows": report.calibration_rows(metrics["_calibration"]),
        "pr_shown": min(report.PR_PANELS, sum(c is not None for c in metrics["_curves"])),
        "classes": len(names),
        "top1": metrics["_top1"],
        "topk": metrics["_topk"],
        "confusion_png": report.confusion_figure(np.array(metrics["confusion"]), names),
        "pr_png": report.pr_figure(
            metrics["_curves"], names, [row["support"] for row in metrics["per_class"]]
        ),
        "coverage_png": report.coverage_figure(metrics["thresholds"]["confidence"]),
        "reliability_png": report.reliability_figure(metrics["_calibration"]),
        "gradcam": panels,
        "gradcam_layer": explained,
        "colour_scale_png": report.colour_scale_figure(),
        "suspects": suspects,
        "suspect_images": suspect_images,
    }
    storage.write_text(storage.join(out_dir, EVALUATION_FILE), json.dumps(summary, indent=2))
    policy = summary["policy"] | {
        "model_uri": model_uri,
        "model_version": tagger.version,
        "run_id": tagger.run_id,
        "dataset_hash": manifest.dataset_hash,
        "split": config.split,
    }
    storage.write_text(storage.join(out_dir, POLICY_FILE), json.dumps(policy, indent=2))
    predictions = {
        key: summary[key] for key in ("model_version", "run_id", "dataset_hash", "split")
    }
    predictions |= {
        "labels": test.labels.tolist(),
        "predicted": test.probabilities.argmax(axis=1).tolist(),
        "probe_top1": floor.top1.value if floor.top1 else None,
    }
    if lowered:
        predictions[f"predicted_{lowered.precision}"] = test.reduced.argmax(axis=1).tolist()
    storage.write_text(storage.join(out_dir, PREDICTIONS_FILE), json.dumps(predictions))
    storage.write_text(
        storage.join(out_dir, SUSPECTS_FILE),
        "".join(json.dumps({k: v for k, v in r.items() if k != "png"}) + "\n" for r in suspects),
    )
    report_path = storage.join(out_dir, REPORT_FILE)
    storage.write_text(report_path, report.render_report(context))
    values = metric_values(summary, config.split)
    if tagger.run_id:
        from components.common.lineage import mlflow_dataset

        log_to_mlflow(tagger, values, out_dir, mlflow_dataset(dataset_dir, manifest))
    return EvaluationResult(
        model_uri=model_uri,
        dataset_hash=manifest.dataset_hash,
        images=len(test.labels),
        top1=summary["top1"]["value"],
        topk=summary[f"top{config.k}"]["value"],
        k=config.k,
        out_dir=out_dir,
        report=report_path,
        probe_top1=floor.top1.value if floor.top1 else None,
        probe_note=floor.unavailable,
        reduced=summary["reduced_precision"],
        metrics=values,
    )
