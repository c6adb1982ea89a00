"""The JSON Schemas of the tag step's row kinds (components/tag/*_row.schema.json), resolved
against each other as one registry, so tests validate rows exactly as a reader would."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).parents[1] / "components" / "tag"
KIND_FILES = {
    "tags": "tag_row.schema.json",
    "review": "review_row.schema.json",
    "rejected": "rejected_row.schema.json",
}


def _load() -> tuple[Registry, dict[str, dict]]:
    schemas = {
        kind: json.loads((SCHEMA_DIR / name).read_text()) for kind, name in KIND_FILES.items()
    }
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    return registry, schemas


REGISTRY, SCHEMAS = _load()
VALIDATORS = {
    kind: Draft202012Validator(schema, registry=REGISTRY) for kind, schema in SCHEMAS.items()
}


def validate_row(row: dict, kind: str | None = None) -> None:
    """Raise jsonschema.ValidationError unless `row` is a valid row of `kind` (default: the
    kind its status says)."""
    if kind is None:
        kind = "rejected" if row.get("status") == "rejected" else "tags"
    VALIDATORS[kind].validate(row)
