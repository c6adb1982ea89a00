"""The review queue, pure: rows of a tagging run's queue (`review.jsonl`, or `review/` in
Parquet) or an evaluation's `suspects.jsonl`, as items with a stable id, ordered so that a
person's label helps most first.

Ordering: lowest top-1/top-2 margin first (the model is least sure between its two best
guesses), ties by uri. Ids are derived from the uri, so they survive a restart and a
client can only ever name an item, never a path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from components.common import storage, tag_rows

TAGS_MARKER = tag_rows.SUCCESS_NAME
REVIEW_FILE = "review.jsonl"  # JSONL runs; Parquet runs keep the queue in review/
SUSPECTS_FILE = "suspects.jsonl"
EVALUATION_FILE = "evaluation.json"
CORRECTIONS_FILE = "corrections.jsonl"
ORDERING = "lowest margin first (top-1 score minus top-2 score): where the model is least sure"


class QueueError(ValueError):
    """The folder is not something to review; the message says what was expected."""


@dataclass(frozen=True)
class ReviewItem:
    """One image to decide, with what the model thinks of it."""

    id: str
    uri: str
    content_hash: str | None  # known for tag rows; suspects get it when decided
    top: list[dict]  # [{label, score}], best first, at most 3
    top1: str  # the model's guess (what Enter accepts)
    margin: float
    given_label: str | None = None  # suspects: the training label the model contradicts
    model_version: str | None = None
    reason: str | None = None

    def to_json(self) -> dict:
        """The item as the page's API sends it (no storage detail beyond the uri's name)."""
        return {
            "id": self.id,
            "name": self.uri.rsplit("/", 1)[-1],
            "top": self.top,
            "top1": self.top1,
            "margin": self.margin,
            "given_label": self.given_label,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Queue:
    """Everything the review page shows: items in review order, the full label list."""

    folder: str
    kind: str  # "tags" or "suspects"
    items: list[ReviewItem]
    labels: list[str]
    model: str | None = None
    model_version: str | None = None
    ordering: str = ORDERING
    by_id: dict[str, ReviewItem] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.by_id.update({item.id: item for item in self.items})

    @property
    def corrections_path(self) -> str:
        """Where decisions on this queue go by default: corrections.jsonl beside it."""
        return storage.join(self.folder, CORRECTIONS_FILE)


def item_id(uri: str) -> str:
    """A short stable id for a queue row: the first 16 hex digits of the uri's SHA-256."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def order_items(items: list[ReviewItem]) -> list[ReviewItem]:
    """Review order: lowest margin first, then by uri (deterministic)."""
    return sorted(items, key=lambda item: (item.margin, item.uri))


def _jsonl(url: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(url).splitlines() if line.strip()]


def _margin(top: list[dict]) -> float:
    scores = [float(entry["score"]) for entry in top]
    return round(scores[0] - (scores[1] if len(scores) > 1 else 0.0), 6) if scores else 0.0


def item_from_tag_row(row: dict) -> ReviewItem:
    """A `review.jsonl` row (the tag row contract) as a review item."""
    return ReviewItem(
        id=item_id(row["uri"]),
        uri=row["uri"],
        content_hash=row.get("content_hash"),
        top=list(row.get("labels") or [])[:3],
        top1=row["top1"],
        margin=float(row["margin"]),
        model_version=row.get("model_version"),
        reason=row.get("reason"),
    )


def item_from_suspect(row: dict, model_version: str | None) -> ReviewItem:
    """A `suspects.jsonl` row as a review item; rows written before suspects carried their
    top 3 get the one prediction they have."""
    top = list(row.get("labels") or [{"label": row["predicted"], "score": row["confidence"]}])
    return ReviewItem(
        id=item_id(row["uri"]),
        uri=row["uri"],
        content_hash=row.get("content_hash"),
        top=top[:3],
        top1=row["predicted"],
        margin=_margin(top),
        given_label=row["label"],
        model_version=model_version,
        reason=f"labelled {row['label']!r}; the model says {row['predicted']!r} "
        f"({float(row['confidence']):.2f}) and most neighbours say {row['neighbour_label']!r}",
    )


def load_queue(folder: str) -> Queue:
    """The queue in a tagging run's folder (review.jsonl) or an evaluation folder
    (suspects.jsonl), told apart by their marker files."""
    folder = folder.rstrip("/")
    if storage.exists(storage.join(folder, TAGS_MARKER)):
        return _tags_queue(folder)
    if storage.exists(storage.join(folder, SUSPECTS_FILE)):
        return _suspects_queue(folder)
    raise QueueError(
        f"{folder} is neither a finished tagging run (no {TAGS_MARKER}) nor an evaluation "
        f"folder (no {SUSPECTS_FILE}); pass the --out folder of `gallerytag tag` or of "
        "`gallerytag evaluate`"
    )


def _tags_queue(folder: str) -> Queue:
    run = json.loads(storage.read_text(storage.join(folder, TAGS_MARKER)))
    rows = list(tag_rows.read_rows(folder, "review"))  # either format
    labels = run.get("labels")
    if not labels:
        raise QueueError(
            f"{folder}/{TAGS_MARKER} lists no labels (the run was made by an older gallerytag); "
            "tag again with this version to review it"
        )
    items = order_items([item_from_tag_row(row) for row in rows])
    return Queue(folder, "tags", items, list(labels), run.get("model"), run.get("model_version"))


def _suspects_queue(folder: str) -> Queue:
    evaluation_path = storage.join(folder, EVALUATION_FILE)
    if not storage.exists(evaluation_path):
        raise QueueError(f"{folder} has {SUSPECTS_FILE} but no {EVALUATION_FILE} beside it")
    evaluation = json.loads(storage.read_text(evaluation_path))
    # per_class lists every label of the model, in label-id order.
    labels = [row["label"] for row in evaluation.get("per_class", [])]
    if not labels:
        raise QueueError(f"{evaluation_path} has no per_class rows to take the labels from")
    version = evaluation.get("model_version")
    rows = _jsonl(storage.join(folder, SUSPECTS_FILE))
    items = order_items([item_from_suspect(row, version) for row in rows])
    return Queue(folder, "suspects", items, labels, evaluation.get("model_uri"), version)
