"""The run file: one YAML that says what `gallerytag run` does, from gallery to tags.

Its sections are the steps' declared configs (`components/*/config.py`, see
`components.common.settings`): the keys of a section are those fields' names, so the file, the
step commands' options and the KFP parameters cannot disagree. A key that is not declared is an
error naming the key, the section and the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.settings import (
    ConfigError,
    Setting,
    as_mapping,
    from_mapping,
    json_schema,
    setting,
    settings_of,
    suggestion,
)
from components.evaluate.config import EvaluateConfig, GateConfig, SuspectConfig
from components.ingest.core import IngestConfig
from components.tag.config import TagConfig, TagOutputs
from components.train.config import TrainConfig


@dataclass(frozen=True)
class RunTarget:
    """What the run reads and where its outputs and step record go."""

    source: str = setting(
        "", "Labelled gallery to learn from: a folder per label or a CSV/JSONL manifest."
    )
    work_dir: str = setting(
        "gallerytag-run",
        "Where dataset/, evaluation/, tags/ and the step record (steps.json) go.",
        kfp=False,
    )
    corrections: str = setting(
        "",
        "Comma-separated corrections.jsonl files from `gallerytag review` (ingest applies them).",
    )
    tracking_uri: str | None = setting(
        None,
        "MLflow server (default: $MLFLOW_TRACKING_URI, else an embedded one under "
        "$GALLERYTAG_HOME).",
        envvar="MLFLOW_TRACKING_URI",
        kfp=False,
    )
    tag_source: str = setting(
        "",
        "Images to tag once a model is promoted (folder or gs:// prefix); empty: no tag step.",
    )
    tag_out: str = setting("", "Where the tags go (default: <work_dir>/tags).", kfp=False)


# Section name -> the config classes whose declared fields it holds, in order.
SECTIONS: dict[str, tuple[type, ...]] = {
    "run": (RunTarget,),
    "ingest": (IngestConfig,),
    "train": (TrainConfig,),
    "evaluate": (EvaluateConfig, SuspectConfig),
    "promote": (GateConfig,),
    "tag": (TagConfig, TagOutputs),
}


@dataclass(frozen=True)
class RunConfig:
    """Every step's config, merged from defaults, the run file and command-line flags."""

    run: RunTarget = field(default_factory=RunTarget)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    promote: GateConfig = field(default_factory=GateConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    tag_outputs: TagOutputs = field(default_factory=TagOutputs)

    def parts(self) -> dict[type, Any]:
        """Config class -> this run's instance of it."""
        found = {
            RunTarget: self.run,
            IngestConfig: self.ingest,
            TrainConfig: self.train,
            EvaluateConfig: self.evaluate,
            SuspectConfig: self.evaluate.suspects,
            GateConfig: self.promote,
            TagConfig: self.tag,
            TagOutputs: self.tag_outputs,
        }
        return found

    def as_sections(self) -> dict[str, dict[str, Any]]:
        """The merged config as run-file sections (what --print-config shows)."""
        parts = self.parts()
        return {
            section: {
                key: value for cls in classes for key, value in as_mapping(parts[cls]).items()
            }
            for section, classes in SECTIONS.items()
        }


def all_settings() -> dict[str, Setting]:
    """Every declared option of every section, by name (names are unique across sections)."""
    found: dict[str, Setting] = {}
    for classes in SECTIONS.values():
        for cls in classes:
            for item in settings_of(cls):
                if item.name in found:
                    raise ValueError(f"option {item.name!r} is declared in two sections")
                found[item.name] = item
    return found


def section_of(name: str) -> str:
    """The run-file section that declares option `name`."""
    for section, classes in SECTIONS.items():
        if any(name in {item.name for item in settings_of(cls)} for cls in classes):
            return section
    raise KeyError(name)


def build(sections: Mapping[str, Mapping[str, Any]], where: str) -> RunConfig:
    """A RunConfig from section mappings; unknown sections and keys are errors."""
    for section, values in sections.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section {section!r}{suggestion(section, SECTIONS)}; "
                f"sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of keys to values")
        declared = {item.name for cls in SECTIONS[section] for item in settings_of(cls)}
        for key in values:
            if key not in declared:
                raise ConfigError(
                    f"{where}: unknown key {key!r} in section {section!r}"
                    f"{suggestion(str(key), declared)}; known: {', '.join(sorted(declared))}"
                )
    parts: dict[type, Any] = {}
    for section, classes in SECTIONS.items():
        values = dict(sections.get(section) or {})
        for cls in classes:
            own = {item.name for item in settings_of(cls)}
            chosen = {key: value for key, value in values.items() if key in own}
            parts[cls] = from_mapping(cls, chosen, f"{where} [{section}]")
    evaluate = dataclasses.replace(parts[EvaluateConfig], suspects=parts[SuspectConfig])
    return RunConfig(
        run=parts[RunTarget],
        ingest=parts[IngestConfig],
        train=parts[TrainConfig],
        evaluate=evaluate,
        promote=parts[GateConfig],
        tag=parts[TagConfig],
        tag_outputs=parts[TagOutputs],
    )


def read_run_file(path: str) -> dict[str, dict[str, Any]]:
    """The sections of a YAML run file (a YAML syntax error names the file and line)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"run file {path} does not exist")
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: a run file is a mapping of sections (run, ingest, train, ...)")
    return {str(key): value for key, value in loaded.items()}


PATH_KEYS = ("source", "work_dir", "tag_source", "tag_out")  # run-section paths


def anchored(value: Any, base: Path) -> Any:
    """A relative local path from the run file, made relative to the file's folder."""
    if not isinstance(value, str) or not value or "://" in value or Path(value).is_absolute():
        return value
    return (base / value).resolve().as_posix()


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults <- the run file <- overrides (option name -> value, e.g. from flags). Paths in
    the file are relative to the file; paths given as flags, to the working directory."""
    sections = read_run_file(path) if path else {}
    merged = {section: dict(values or {}) for section, values in sections.items()}
    if path and isinstance(merged.get("run"), dict):
        base = Path(path).resolve().parent
        run = merged["run"]
        for key in PATH_KEYS:
            if key in run:
                run[key] = anchored(run[key], base)
        if "corrections" in run and isinstance(run["corrections"], str):
            run["corrections"] = ",".join(
                anchored(part.strip(), base) for part in run["corrections"].split(",") if part
            )
    for name, value in (overrides or {}).items():
        merged.setdefault(section_of(name), {})[name] = value
    config = build(merged, path or "command line")
    if not Path(config.run.work_dir).is_absolute() and "://" not in config.run.work_dir:
        work = Path(config.run.work_dir).resolve().as_posix()
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, work_dir=work))
    return config


def schema() -> dict[str, Any]:
    """The JSON Schema of a run file, derived from the declarations."""
    properties = {}
    for section, classes in SECTIONS.items():
        merged: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}
        for cls in classes:
            merged["properties"].update(json_schema(cls)["properties"])
        properties[section] = merged
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "gallerytag run file",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
