"""The corrections contract: `corrections.jsonl`, one decision of a person per line.

`gallerytag review` appends it (and `review import` writes it from Label Studio), `gallerytag
ingest --corrections` reads it. Rows are never rewritten: an `undo` row cancels the decision
before it, and the last row for an image wins, so the file is its own history.

Row: {schema_version, uri, content_hash, decision, label, previous_top1, model_version,
reviewer, time, source}. `decision` is `accept` (the model's top-1 confirmed), `label` (another
label picked), `none` (none of these / not an image of a tag: exclude it) or `undo`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from components.common import storage

SCHEMA_VERSION = 1
DECISIONS = ("accept", "label", "none", "undo")
LABELLING = ("accept", "label")  # decisions that give the image a label


class CorrectionsError(ValueError):
    """A corrections file cannot be used as given; the message names the line and the fix."""


def check_row(row: dict, where: str) -> dict:
    """Return the row if it follows the contract, else raise CorrectionsError naming `where`."""
    if not isinstance(row, dict):
        raise CorrectionsError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if row.get("schema_version") != SCHEMA_VERSION:
        raise CorrectionsError(
            f"{where}: schema_version {row.get('schema_version')!r}, this gallerytag reads "
            f"{SCHEMA_VERSION}"
        )
    decision = row.get("decision")
    if decision not in DECISIONS:
        raise CorrectionsError(f"{where}: decision {decision!r} is not one of {DECISIONS}")
    if not row.get("uri") and not row.get("content_hash"):
        raise CorrectionsError(f"{where}: a row needs a uri or a content_hash to name its image")
    if decision in LABELLING and not isinstance(row.get("label"), str):
        raise CorrectionsError(f"{where}: decision {decision!r} needs a label")
    return row


def parse_lines(text: str, where: str) -> list[dict]:
    """The checked rows of a corrections file's text (blank lines skipped)."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorrectionsError(f"{where} line {number}: not JSON ({error})") from None
        rows.append(check_row(row, f"{where} line {number}"))
    return rows


def read_rows(url: str) -> list[dict]:
    """Every row of one corrections file (local or gs://), in file order."""
    if not storage.exists(url):
        raise FileNotFoundError(f"corrections file {url} does not exist")
    return parse_lines(storage.read_text(url), url)


def latest_by_uri(rows: Iterable[dict]) -> dict[str, dict]:
    """uri -> the decision in force for it (rows in file order; `undo` cancels the last)."""
    state: dict[str, dict] = {}
    for row in rows:
        key = row.get("uri") or row["content_hash"]
        if row["decision"] == "undo":
            state.pop(key, None)
        else:
            state[key] = row
    return state


@dataclass(frozen=True)
class Decision:
    """What review decided for one image: a label, or None to exclude it."""

    label: str | None
    uri: str | None
    content_hash: str | None
    origin: str  # which corrections file said so


@dataclass(frozen=True)
class Corrections:
    """The decisions in force from one or more corrections files; a later file wins."""

    files: tuple[str, ...] = ()
    by_uri: dict[str, Decision] = field(default_factory=dict)
    by_hash: dict[str, Decision] = field(default_factory=dict)

    def lookup(self, uri: str, content_hash: str) -> Decision | None:
        """The decision for an image: by content hash first (it survives a move or a copy),
        then by uri."""
        return self.by_hash.get(content_hash) or self.by_uri.get(uri)

    @property
    def labels(self) -> set[str]:
        """Every label a decision gives."""
        return {d.label for d in self.by_uri.values() if d.label is not None}

    def __bool__(self) -> bool:
        return bool(self.by_uri)


def load_corrections(urls: Iterable[str]) -> Corrections:
    """Read corrections files (in the order given) into the decisions in force."""
    files = tuple(urls)
    by_uri: dict[str, Decision] = {}
    by_hash: dict[str, Decision] = {}
    for url in files:
        for key, row in latest_by_uri(read_rows(url)).items():
            label = row["label"] if row["decision"] in LABELLING else None
            decision = Decision(label, row.get("uri"), row.get("content_hash"), url)
            by_uri[key] = decision
            if decision.content_hash:
                by_hash[decision.content_hash] = decision
    return Corrections(files, by_uri, by_hash)
