"""Where ingest finds its images: a folder per class, or a CSV / JSONL manifest.

A manifest lists `uri,label[,split]` (split as Vertex AI's ML_USE: train, validation, test;
empty or "unassigned" lets the content hash decide). Relative URIs are relative to the
manifest's own folder. Every source yields (uri, label, split or None) items.

Corrections (`corrections.jsonl` from `gallerytag review`, see components/common/corrections.py)
ride along: images they name outside the source become one more partition, and `Inspect`
lets a reviewer's decision win over the source's label.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from components.common import storage
from components.common.corrections import Corrections, load_corrections
from components.ingest.core import validate_label

SourceItem = tuple[str, str, str | None]
# Not a possible label (labels cannot contain "/"), so it never collides with a class folder.
CORRECTIONS_PARTITION = "/corrections"
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json")
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation",
    "test": "test",
    "": None, "unassigned": None,
}  # fmt: skip


class SourceError(ValueError):
    """The source cannot be ingested as given; the message says how to fix it."""


@dataclass(frozen=True)
class Source:
    """A resolved source: what kind it is, its sorted labels (with any that only corrections
    give) and the corrections that apply to it."""

    location: str
    kind: str  # "folder" or "manifest"
    labels: list[str]
    corrections: Corrections = field(default_factory=Corrections)
    folders: tuple[str, ...] | None = None  # class folders to list; None: one per label
    added: tuple[SourceItem, ...] = ()  # images only the corrections name

    def partitions(self) -> list[str]:
        """Independent pieces to list in parallel: "" (top level) + one per label, or the
        file; plus the corrections' own images."""
        folders = self.labels if self.folders is None else list(self.folders)
        parts = ["", *folders] if self.kind == "folder" else [self.location]
        return [*parts, CORRECTIONS_PARTITION] if self.added else parts

    def items(self, partition: str) -> Iterator[SourceItem]:
        """The (uri, label, split) items of one partition; label "" means "no label"."""
        if partition == CORRECTIONS_PARTITION:
            yield from self.added
        elif self.kind == "manifest":
            yield from read_manifest_rows(self.location)
        elif partition == "":
            for uri in storage.list_files(self.location, recursive=False):
                yield uri, "", None
        else:
            for uri in storage.list_files(storage.join(self.location, partition)):
                yield uri, partition, None


def with_corrections(source: Source, files: list[str]) -> Source:
    """`source` with the decisions of these corrections files applied at ingest: their
    labels (validated like folder names) join the label list, and images they name that the
    source does not list are added (a decision of "none" still adds them, to be rejected
    with a reason, so seen = accepted + rejected + duplicates keeps holding)."""
    if not files:
        return source
    corrections = load_corrections(files)
    for label in corrections.labels:
        _label(label, f"corrections {', '.join(files)}")
    # A folder source lists everything under its location, a manifest its rows; the rest
    # of the corrected images are outside the source.
    listed = (
        {uri for uri, _, _ in read_manifest_rows(source.location)}
        if source.kind == "manifest"
        else None
    )
    prefix = source.location.rstrip("/") + "/"

    def inside(uri: str) -> bool:
        return uri in listed if listed is not None else uri.startswith(prefix)

    added = tuple(
        sorted(
            (decision.uri, "", None)  # no source label: Inspect applies the decision
            for decision in corrections.by_uri.values()
            if decision.uri and not inside(decision.uri)
        )
    )
    return replace(
        source,
        labels=sorted(set(source.labels) | corrections.labels),
        corrections=corrections,
        folders=tuple(source.labels) if source.kind == "folder" else None,
        added=added,
    )


def parse_split(value: str | None, where: str) -> str | None:
    """Normalise a split cell; unknown values are an error naming the row."""
    key = (value or "").strip().lower()
    if key not in SPLIT_NAMES:
        raise SourceError(
            f"{where}: split {value!r} is not one of train, validation, test (or empty)"
        )
    return SPLIT_NAMES[key]


def _resolve(uri: str, manifest: str) -> str:
    if "://" in uri or uri.startswith("/"):
        return uri
    return storage.join(manifest.rsplit("/", 1)[0], uri) if "/" in manifest else uri


def read_manifest_rows(manifest: str) -> Iterator[SourceItem]:
    """Stream (uri, label, split) rows from a CSV (header optional) or JSONL manifest."""
    # utf-8-sig: spreadsheet exports start with a byte-order mark, which would otherwise
    # glue itself to the first header cell (and make the header a phantom label).
    with storage.open_file(manifest, "rb") as raw, io.TextIOWrapper(raw, "utf-8-sig") as stream:
        if manifest.lower().endswith(".csv"):
            yield from _csv_rows(stream, manifest)
        else:
            yield from _jsonl_rows(stream, manifest)


def _csv_rows(stream: io.TextIOBase, manifest: str) -> Iterator[SourceItem]:
    for number, row in enumerate(csv.reader(stream), start=1):
        if not row or not "".join(row).strip():
            continue
        if number == 1 and [cell.strip().lower() for cell in row[:2]] == ["uri", "label"]:
            continue  # optional header
        where = f"{manifest} line {number}"
        if len(row) not in (2, 3):
            raise SourceError(f"{where}: expected uri,label[,split], got {row!r}")
        split = parse_split(row[2] if len(row) == 3 else None, where)
        yield _resolve(row[0].strip(), manifest), _label(row[1], where), split


def _jsonl_rows(stream: io.TextIOBase, manifest: str) -> Iterator[SourceItem]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        where = f"{manifest} line {number}"
        try:
            row = json.loads(line)
            uri, label = row["uri"], row["label"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SourceError(f"{where}: expected a JSON object with uri and label") from None
        for key in ("uri", "label", "split"):
            if not isinstance(row.get(key, ""), str) and not (key == "split" and row[key] is None):
                raise SourceError(
                    f"{where}: {key} must be a string, not {json.dumps(row[key])} "
                    f"({type(row[key]).__name__})"
                )
        split = parse_split(row.get("split"), where)
        yield _resolve(uri.strip(), manifest), _label(label, where), split


def _label(value: str, where: str) -> str:
    try:
        return validate_label(value.strip())
    except ValueError as error:
        raise SourceError(f"{where}: {error}") from None


def resolve_source(location: str) -> Source:
    """Decide what `location` is and find its labels, failing fast with the fix."""
    location = location.rstrip("/")
    if not storage.exists(location):
        raise FileNotFoundError(f"source {location} does not exist")
    if location.lower().endswith(MANIFEST_SUFFIXES):
        labels = sorted({label for _, label, _ in read_manifest_rows(location)})
        if not labels:
            raise SourceError(f"manifest {location} lists no images")
        return Source(location, "manifest", labels)
    labels = [validate_label(name) for name in storage.list_dirs(location)]
    if not labels:
        raise SourceError(
            f"{location} has no class sub-folders; expected {location}/<label>/<image files> "
            "or a CSV/JSONL manifest of uri,label[,split]"
        )
    return Source(location, "folder", labels)


def split_locations(text: str) -> list[str]:
    """Comma-separated locations (a KFP string parameter) as a list; empty gives none."""
    return [part.strip() for part in text.split(",") if part.strip()]


def source_fingerprint(location: str, corrections: list[str] | tuple[str, ...] = ()) -> str:
    """SHA-256 over every item (uri, label, split) and its size, and over the text of each
    corrections file: changes when an image is added, removed, relabelled or replaced by one
    of another size, or a decision is added. Pipelines use it as the ingest step's cache
    key; it lists the source but reads no image."""
    source = resolve_source(location)
    digest = hashlib.sha256()
    for url in corrections:
        digest.update(f"corrections\t{url}\n".encode())
        digest.update(storage.read_bytes(url))
    if source.kind == "manifest":
        digest.update(storage.read_bytes(source.location))
    for partition in source.partitions():
        for uri, label, split in sorted(source.items(partition)):
            size = storage.size(uri) if storage.exists(uri) else -1
            digest.update(f"{uri}\t{label}\t{split}\t{size}\n".encode())
    return digest.hexdigest()
