"""Promotion: score a registered candidate and the current `champion` on the same test
images, let the gate decide, move the alias only on a pass, and record why (JSON + tags)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.common import dataset, storage
from components.common.tracking import TaggerSpec, fetch_tagger, run_json_artifact
from components.evaluate import core
from components.evaluate.floor import measure_probe
from components.evaluate.gate import Decision, GateConfig, decide, decide_first
from components.evaluate.run import (
    EVALUATION_FILE,
    PREDICTIONS_FILE,
    check_compatible,
    require_split,
)
from components.evaluate.scoring import predict

GATE_TAG = "gallerytag.gate"
JUDGED_AGAINST_TAG = "gallerytag.gate.champion"  # version the gate compared with ("" = none)
PROMOTED_TAG = "gallerytag.promoted_to"
PREDICTIONS_ARTIFACT = f"evaluation/{PREDICTIONS_FILE}"  # on the model's MLflow run


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version: what the registry alias points at."""

    name: str
    version: str

    @property
    def uri(self) -> str:
        """The MLflow URI of this exact version."""
        return f"models:/{self.name}/{self.version}"


class AliasMoved(RuntimeError):
    """The alias no longer points where the gate saw it: the decision is out of date."""


def resolve_version(model_uri: str) -> ModelVersionRef:
    """models:/NAME/VERSION or models:/NAME@ALIAS -> the version it names."""
    import mlflow

    if not model_uri.startswith("models:/"):
        raise ValueError(
            f"promotion needs a registered model version (models:/NAME/VERSION), got {model_uri}"
        )
    rest = model_uri[len("models:/") :]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        found = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
        return ModelVersionRef(name, str(found.version))
    name, _, version = rest.rpartition("/")
    if not name or not version.isdigit():
        raise ValueError(f"{model_uri} does not name a version; use models:/NAME/VERSION")
    return ModelVersionRef(name, version)


def current_champion(name: str, alias: str) -> ModelVersionRef | None:
    """The version behind the alias, or None when the alias is not set yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
            return None
        raise
    return ModelVersionRef(name, str(found.version))


def logged_evaluation(
    tagger: TaggerSpec, manifest: dataset.Manifest, split: str, tmp: str
) -> dict | None:
    """The predictions `gallerytag evaluate` logged on this very model's run for this dataset
    and split (labels, top-1, probe), or None when there are none to reuse."""
    found = run_json_artifact(tagger.run_id, PREDICTIONS_ARTIFACT, tmp)
    if found is None:
        return None
    same = (found.get("dataset_hash"), found.get("split"), str(found.get("model_version")))
    if same != (manifest.dataset_hash, split, str(tagger.version)):
        return None
    return found


@dataclass(frozen=True)
class Scored:
    """A model's top-1 correctness per image of a split, in file order."""

    correct: np.ndarray
    labels: np.ndarray
    tagger: TaggerSpec
    probe_top1: float | None  # its linear probe's top-1 on the same images, when known
    reused: bool  # from the model's logged evaluation rather than predicted again


def correct_on_split(
    model_uri: str, dataset_dir: str, manifest: dataset.Manifest, split: str
) -> Scored:
    """Score the model on the split. Its own logged evaluation of this dataset and split is
    reused when there is one (the same images, already predicted)."""
    with tempfile.TemporaryDirectory(prefix="gallerytag-gate-") as tmp:
        tagger = fetch_tagger(model_uri, tmp)
        check_compatible(tagger, manifest, dataset_dir)
        logged = logged_evaluation(tagger, manifest, split, tmp)
        if logged is not None:
            labels = np.asarray(logged["labels"])
            correct = np.asarray(logged["predicted"]) == labels
            return Scored(correct, labels, tagger, logged.get("probe_top1"), reused=True)
        model = tagger.load()
    files = dataset.shard_paths(dataset_dir, manifest, split)
    from components.common.tfdata import read_in_order

    found = predict(model, read_in_order(files, manifest.image_size, 64), lambda *_: False)
    correct = core.top_k_correct(found.probabilities, found.labels, 1)
    return Scored(correct, found.labels, tagger, None, reused=False)


def judge(
    candidate_uri: str,
    dataset_dir: str,
    config: GateConfig = GateConfig(),
    decision_path: str | None = None,
    split: str = "test",
) -> Decision:
    """Run the gate without touching the alias (`config.alias`). The decision is returned,
    written to `decision_path` (JSON) and set as tags on the model version and its run."""
    import mlflow

    alias = config.alias
    candidate = resolve_version(candidate_uri)
    manifest = dataset.read_manifest(dataset_dir)
    require_split(manifest, dataset_dir, split)
    champion = current_champion(candidate.name, alias)
    scored = correct_on_split(candidate.uri, dataset_dir, manifest, split)
    candidate_correct, labels, tagger = scored.correct, scored.labels, scored.tagger
    probe_top1 = scored.probe_top1
    if champion is None:
        if config.beat_probe and probe_top1 is None:
            floor = measure_probe(tagger.backbone, tagger.weights, dataset_dir, manifest, split)
            probe_top1 = floor.top1.value if floor.top1 else None
        decision = decide_first(candidate_correct, config, probe_top1)
    elif champion.version == candidate.version:
        top1 = float(candidate_correct.mean())
        reason = f"version {candidate.version} already holds the '{alias}' alias"
        decision = Decision(False, [reason], top1, top1)
    else:
        try:
            champion_correct = correct_on_split(champion.uri, dataset_dir, manifest, split).correct
        except dataset.DatasetError as error:
            champion_correct = None
            reason = f"champion {champion.uri} cannot be scored on this dataset: {error}"
            decision = Decision(False, [reason], float(candidate_correct.mean()), None)
        if champion_correct is not None:
            decision = decide(candidate_correct, champion_correct, labels, manifest.labels, config)
    record = decision.as_dict() | {
        "candidate": candidate.uri,
        "champion": champion.uri if champion else None,
        "alias": alias,
        "dataset_hash": manifest.dataset_hash,
        "split": split,
        "gate": vars(config),
        "candidate_scores": "reused from its evaluation" if scored.reused else "predicted",
    }
    verdict = "pass" if decision.promote else "fail"
    reasons = "; ".join(decision.reasons)[:5000]  # MLflow tag values are size-limited
    client = mlflow.MlflowClient()
    client.set_model_version_tag(candidate.name, candidate.version, GATE_TAG, verdict)
    client.set_model_version_tag(candidate.name, candidate.version, f"{GATE_TAG}.reasons", reasons)
    judged = champion.version if champion else ""
    client.set_model_version_tag(candidate.name, candidate.version, JUDGED_AGAINST_TAG, judged)
    run_id = client.get_model_version(candidate.name, candidate.version).run_id
    if run_id:
        client.set_tag(run_id, GATE_TAG, verdict)
        client.set_tag(run_id, f"{GATE_TAG}.reasons", reasons)
    client.update_model_version(
        candidate.name,
        candidate.version,
        description=version_description(read_evaluation(run_id), record, verdict),
    )
    if decision_path:
        storage.write_text(decision_path, json.dumps(record, indent=2))
    return decision


def read_evaluation(run_id: str | None) -> dict | None:
    """evaluation.json of the model's run (`gallerytag evaluate`), or None if never run."""
    with tempfile.TemporaryDirectory(prefix="gallerytag-gate-") as tmp:
        return run_json_artifact(run_id, f"evaluation/{EVALUATION_FILE}", tmp)


def _interval(figure: dict) -> str:
    return (
        f"{figure['value']:.3f} (95% CI {figure['low']:.3f}-{figure['high']:.3f}, n={figure['n']})"
    )


def version_description(evaluation: dict | None, record: dict, verdict: str) -> str:
    """The model version's description (Markdown in the MLflow UI): the evaluation's
    headline figures and the gate's decision with its reasons."""
    lines = ["## Evaluation"]
    if evaluation is None:
        lines.append("Not evaluated (run `gallerytag evaluate`).")
    else:
        k = evaluation.get("k", 3)
        lines += [
            f"- split `{evaluation['split']}` of dataset `{evaluation['dataset_hash'][:12]}`, "
            f"{evaluation['images']} images",
            f"- top-1 {_interval(evaluation['top1'])}",
            f"- top-{k} {_interval(evaluation[f'top{k}'])}",
            f"- macro F1 {evaluation['averages']['macro']['f1']:.3f}, ECE {evaluation['ece']:.3f}",
        ]
        probe = evaluation.get("probe") or {}
        if "top1" in probe:
            lines.append(
                f"- linear probe top-1 {probe['top1']['value']:.3f} (gain "
                f"{evaluation['gain_over_probe']:+.3f})"
            )
        expected = (evaluation.get("policy") or {}).get("expected") or {}
        if expected.get("precision"):
            lines.append(
                f"- auto-tag policy: expected precision {expected['precision']['value']:.3f}, "
                f"coverage {expected['coverage']:.3f}"
            )
    champion = record["champion"] or "none (first model)"
    lines += [
        "",
        f"## Promotion gate: {verdict}",
        f"- candidate top-1 {record['candidate_top1']:.3f} against champion {champion}"
        + (f" ({record['champion_top1']:.3f})" if record["champion_top1"] is not None else ""),
        *(f"- {reason}" for reason in record["reasons"]),
    ]
    return "\n".join(lines)[:5000]


def move_alias(candidate_uri: str, alias: str = "champion") -> ModelVersionRef:
    """Point the registry alias at the candidate version, compare-and-set style: only if it
    passed the gate and the alias still points at the version the gate compared it with.

    The registry has no conditional write, so the alias is read again after the write: a
    promotion that lands in the same instant is reported instead of both claiming success.
    """
    import mlflow

    candidate = resolve_version(candidate_uri)
    client = mlflow.MlflowClient()
    tags = client.get_model_version(candidate.name, candidate.version).tags
    if tags.get(GATE_TAG) != "pass" or JUDGED_AGAINST_TAG not in tags:
        raise ValueError(
            f"{candidate.uri} has not passed the promotion gate; run `gallerytag promote` "
            "(or the pipeline's gate step) first"
        )
    judged = tags[JUDGED_AGAINST_TAG]
    current = current_champion(candidate.name, alias)
    if (current.version if current else "") != judged:
        raise AliasMoved(
            f"'{alias}' now points at version {current.version if current else '(none)'}, "
            f"but {candidate.uri} was compared with {judged or 'no champion'}; run the "
            "promotion again to compare it with the current champion"
        )
    client.set_registered_model_alias(candidate.name, alias, candidate.version)
    after = current_champion(candidate.name, alias)
    if after is None or after.version != candidate.version:
        raise AliasMoved(
            f"another promotion moved '{alias}' at the same time (it points at "
            f"{after.version if after else '(none)'}); run the promotion again"
        )
    client.set_model_version_tag(candidate.name, candidate.version, PROMOTED_TAG, alias)
    return candidate


def promote(candidate_uri: str, dataset_dir: str, **judging: Any) -> Decision:
    """`judge` the candidate (same keyword arguments) and, on a pass, move the alias to it."""
    decision = judge(candidate_uri, dataset_dir, **judging)
    if decision.promote:
        move_alias(candidate_uri, judging.get("config", GateConfig()).alias)
    return decision
