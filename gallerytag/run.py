"""`gallerytag run gallery.yaml`: ingest -> train -> evaluate -> promote -> tag from one file.

Each finished step is recorded in <work_dir>/steps.json with a fingerprint of everything it
depends on (its config, its inputs' identity); a rerun skips a step whose fingerprint is
unchanged and whose output is still there, as the KFP pipeline's cache does for ingest.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from components.common import storage
from components.common.settings import as_mapping, click_options
from gallerytag.runfile import SECTIONS, RunConfig, load

STEPS_FILE = "steps.json"


def fingerprint(*parts: Any) -> str:
    """A digest of JSON-ready parts: equal exactly when a step would do the same work."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class StepRecord:
    """What <work_dir>/steps.json remembers of finished steps."""

    path: Path
    steps: dict[str, dict[str, Any]]

    @classmethod
    def open(cls, work_dir: str) -> StepRecord:
        """The record of `work_dir` (empty when there is none yet)."""
        path = Path(work_dir) / STEPS_FILE
        steps = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, steps)

    def done(self, step: str, key: str) -> dict[str, Any] | None:
        """The outputs of `step` when it last finished with fingerprint `key`."""
        found = self.steps.get(step)
        return found["outputs"] if found and found.get("fingerprint") == key else None

    def finish(self, step: str, key: str, outputs: dict[str, Any]) -> None:
        """Record a finished step (written at once, so a later failure keeps it)."""
        self.steps[step] = {"fingerprint": key, "outputs": outputs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.steps, indent=2))  # in the order they ran
        temporary.replace(self.path)


def run_step(
    record: StepRecord,
    name: str,
    key: str,
    still_there: Callable[[dict[str, Any]], bool],
    work: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Skip `name` when it finished with this fingerprint and its output exists; else do it."""
    previous = record.done(name, key)
    if previous is not None and still_there(previous):
        click.echo(f"[{name}] unchanged since the last run: skipped")
        return previous
    outputs = work()
    record.finish(name, key, outputs)
    return outputs


def run_all(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Run every step in order; returns each step's outputs."""
    from components.common.tracking import tracking
    from components.ingest.sources import source_fingerprint, split_locations

    if not config.run.source:
        raise click.UsageError("no source: set run.source in the run file or pass --source")
    work = Path(config.run.work_dir)
    record = StepRecord.open(str(work))
    corrections = split_locations(config.run.corrections)
    results: dict[str, dict[str, Any]] = {}

    dataset_dir = str(work / "dataset")
    source_key = source_fingerprint(config.run.source, corrections)
    results["ingest"] = run_step(
        record,
        "ingest",
        fingerprint(source_key, as_mapping(config.ingest), dataset_dir),
        lambda out: storage.exists(storage.join(out["dataset"], "manifest.json")),
        lambda: ingest_step(config, dataset_dir, corrections),
    )
    dataset_hash = results["ingest"]["dataset_hash"]
    with tracking(config.run.tracking_uri) as uri:
        train = config.train
        results["train"] = run_step(
            record,
            "train",
            fingerprint(dataset_hash, as_mapping(train), uri),
            lambda out: True,
            lambda: train_step(config, dataset_dir, uri),
        )
        model_uri = results["train"]["model"]
        evaluation_dir = str(work / "evaluation")
        results["evaluate"] = run_step(
            record,
            "evaluate",
            fingerprint(
                model_uri,
                dataset_hash,
                as_mapping(config.evaluate),
                as_mapping(config.evaluate.suspects),
            ),
            lambda out: storage.exists(storage.join(evaluation_dir, "evaluation.json")),
            lambda: evaluate_step(config, model_uri, dataset_dir, evaluation_dir),
        )
        results["promote"] = run_step(
            record,
            "promote",
            fingerprint(model_uri, dataset_hash, as_mapping(config.promote)),
            lambda out: True,
            lambda: promote_step(config, model_uri, dataset_dir, str(work / "decision.json")),
        )
        if config.run.tag_source and results["promote"]["champion"] is None:
            click.echo(f"[tag] skipped: no model holds @{config.promote.alias} yet")
        elif config.run.tag_source:
            served = f"models:/{train.registered_model}@{config.promote.alias}"
            tag_out = config.run.tag_out or str(work / "tags")
            tag_key = listing_fingerprint(config.run.tag_source, exclude=tag_out)
            results["tag"] = run_step(
                record,
                "tag",
                fingerprint(
                    results["promote"]["champion"],
                    tag_key,
                    as_mapping(config.tag),
                    as_mapping(config.tag_outputs),
                    tag_out,
                ),
                lambda out: storage.exists(storage.join(out["out"], "_SUCCESS.json")),
                lambda: tag_step(config, served, tag_out),
            )
    return results


def listing_fingerprint(location: str, exclude: str) -> str:
    """A digest of the names and sizes of the files to tag (none is read), outputs excluded."""
    listing = sorted(
        (uri, storage.size(uri))
        for uri in storage.list_files(location)
        if not storage.is_within(exclude, uri)
    )
    return fingerprint(listing)


def ingest_step(config: RunConfig, dataset_dir: str, corrections: list[str]) -> dict[str, Any]:
    """Ingest the source into <work_dir>/dataset."""
    from components.ingest.pipeline import run as ingest

    click.echo(f"[ingest] {config.run.source} -> {dataset_dir}")
    summary = ingest(config.run.source, dataset_dir, config.ingest, corrections=corrections)
    click.echo(
        f"[ingest] seen {summary.seen} = accepted {summary.accepted} + rejected "
        f"{summary.rejected} + duplicates {summary.duplicates}"
    )
    return {"dataset": dataset_dir, "dataset_hash": summary.dataset_hash, "seen": summary.seen}


def train_step(config: RunConfig, dataset_dir: str, tracking_uri: str) -> dict[str, Any]:
    """Fine-tune with Horovod; the registered version is the model the next steps use."""
    import dataclasses

    from components.train.launcher import train

    training = dataclasses.replace(config.train, data=dataset_dir)
    click.echo(f"[train] horovodrun -np {training.workers}, tracked in MLflow at {tracking_uri}")
    result = train(training, tracking_uri)
    if not result.version:
        raise RuntimeError("training registered no model version; see the log above")
    model = f"models:/{result.registered_model}/{result.version}"
    click.echo(f"[train] {model} (run {result.run_id})")
    return {"model": model, "run_id": result.run_id}


def evaluate_step(config: RunConfig, model_uri: str, dataset_dir: str, out: str) -> dict[str, Any]:
    """Score the model on the test split, write the report and policy.json."""
    from components.evaluate.run import evaluate

    click.echo(f"[evaluate] {model_uri} on the {config.evaluate.split} split")
    result = evaluate(model_uri, dataset_dir, out, config.evaluate)
    probe = "" if result.probe_top1 is None else f" vs linear probe {result.probe_top1:.4f}"
    click.echo(f"[evaluate] top-1 {result.top1:.4f}{probe}; report {result.report}")
    if result.reduced:
        from components.evaluate.cli import precision_line

        click.echo(f"[evaluate] {precision_line(result.reduced, config.evaluate.split, result.k)}")
    return {"top1": result.top1, "probe_top1": result.probe_top1, "report": str(result.report)}


def promote_step(
    config: RunConfig, model_uri: str, dataset_dir: str, decision_path: str
) -> dict[str, Any]:
    """The gate: move the alias only when the candidate beats the champion."""
    from components.evaluate.promote import current_champion, promote

    gate = config.promote
    decision = promote(model_uri, dataset_dir, config=gate, decision_path=decision_path)
    verdict = f"promoted to @{gate.alias}" if decision.promote else "not promoted"
    click.echo(f"[promote] {model_uri}: {verdict}")
    for reason in decision.reasons:
        click.echo(f"[promote]   - {reason}")
    champion = current_champion(config.train.registered_model, gate.alias)
    return {
        "promoted": decision.promote,
        "champion": None if champion is None else f"models:/{champion.name}/{champion.version}",
    }


def tag_step(config: RunConfig, model_uri: str, out: str) -> dict[str, Any]:
    """Tag the images of run.tag_source with the champion, its evaluation's policy."""
    from components.tag.cli import tagger_and_policy
    from components.tag.pipeline import run as tag

    click.echo(f"[tag] {config.run.tag_source} with {model_uri} -> {out}")
    with tempfile.TemporaryDirectory(prefix="gallerytag-model-") as tmp:
        tagger, policy = tagger_and_policy(model_uri, config.tag, config.run.tracking_uri, tmp)
        summary = tag(config.run.tag_source, out, tagger, policy, config.tag_outputs)
    click.echo(
        f"[tag] seen {summary.seen} = auto {summary.auto} + review {summary.review} + "
        f"rejected {summary.rejected}"
    )
    return {
        "out": out,
        "seen": summary.seen,
        "auto": summary.auto,
        "review": summary.review,
        "rejected": summary.rejected,
    }


def flag_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line (click leaves the others None)."""
    return {name: value for name, value in options.items() if value not in (None, (), {})}


def overriding_options(command: Callable) -> Callable:
    """Every declared option of every section as a flag that overrides the run file."""
    for classes in reversed(SECTIONS.values()):
        for cls in reversed(classes):
            command = click_options(cls, unset_default=True)(command)
    return command


@click.command("run")
@click.argument("run_file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the merged config (defaults <- file <- flags) as YAML and exit.",
)
@overriding_options
def run_command(run_file: str | None, print_config: bool, **options: Any) -> None:
    """Run ingest -> train -> evaluate -> promote -> tag as RUN_FILE (YAML) says; any flag
    overrides the file; a rerun skips the steps whose inputs and config are unchanged."""
    import yaml

    config = load(run_file, flag_overrides(options))
    if print_config:
        click.echo(yaml.safe_dump(config.as_sections(), sort_keys=False), nl=False)
        return
    results = run_all(config)
    click.echo(f"done; step record: {Path(config.run.work_dir) / STEPS_FILE}")
    if "tag" in results:
        click.echo(f"tags: {results['tag']['out']}")
