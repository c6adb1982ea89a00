"""One review session, pure of HTTP: the queue, the corrections log and who is reviewing.

The web adapter (`app.py`) only translates requests into these calls, so the rules (ids only,
labels from the model's list, one decision per image) are tested without a browser.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from components.common import storage
from components.common.images import DecodeLimits, content_hash, decode_image, encode_jpeg
from components.review.log import CorrectionsLog
from components.review.queue import Queue, ReviewItem

THUMB_SIDE = 256
THUMB_CACHE = 256  # thumbnails kept in memory (a page shows a few dozen at a time)


class UnknownItem(KeyError):
    """An id that is not in this queue (the only way a client can name an image)."""


class BadDecision(ValueError):
    """A decision the page should never send: unknown kind or a label not in the model."""


@dataclass
class ReviewSession:
    """Decisions on one queue by one reviewer, appended to one corrections log."""

    queue: Queue
    log: CorrectionsLog
    reviewer: str
    _thumbs: OrderedDict[str, bytes] = field(default_factory=OrderedDict, repr=False)
    _hashes: dict[str, str] = field(default_factory=dict, repr=False)

    def item(self, item_id: str) -> ReviewItem:
        """The queue item with this id, or UnknownItem."""
        try:
            return self.queue.by_id[item_id]
        except KeyError:
            raise UnknownItem(item_id) from None

    def counts(self, state: dict[str, dict] | None = None) -> dict[str, int]:
        """done / left / total over this queue's items."""
        state = self.log.state() if state is None else state
        done = sum(1 for item in self.queue.items if item.uri in state)
        return {"done": done, "left": len(self.queue.items) - done, "total": len(self.queue.items)}

    def pending(self) -> dict:
        """What the page loads: undecided items in review order, labels, ordering, counts."""
        state = self.log.state()
        return {
            "kind": self.queue.kind,
            "labels": self.queue.labels,
            "ordering": self.queue.ordering,
            "model": self.queue.model,
            "model_version": self.queue.model_version,
            "reviewer": self.reviewer,
            "items": [item.to_json() for item in self.queue.items if item.uri not in state],
            **self.counts(state),
        }

    def decide(self, item_id: str, decision: str, label: str | None = None) -> dict:
        """Record accept (the model's top-1), label (one of the model's labels) or none."""
        item = self.item(item_id)
        if decision == "accept":
            label = item.top1
        elif decision == "label":
            if label not in self.queue.labels:
                raise BadDecision(f"label {label!r} is not one of the model's labels")
        elif decision == "none":
            label = None
        else:
            raise BadDecision(f"decision {decision!r} is not accept, label or none")
        row = {
            "uri": item.uri,
            "content_hash": item.content_hash or self._hash_of(item),
            "decision": decision,
            "label": label,
            "previous_top1": item.top1,
            "given_label": item.given_label,
            "model_version": item.model_version or self.queue.model_version,
            "reviewer": self.reviewer,
            "source": self.queue.kind,
        }
        return self.log.decide(row)

    def undo(self, item_id: str) -> dict:
        """Cancel this item's decision; returns the row that was undone."""
        return self.log.undo(self.item(item_id).uri, self.reviewer)

    def thumbnail(self, item_id: str) -> bytes:
        """A JPEG thumbnail of the item's image, read through the storage layer."""
        item = self.item(item_id)
        if item_id not in self._thumbs:
            data = storage.read_bytes(item.uri)
            self._hashes[item_id] = content_hash(data)
            image = decode_image(data, DecodeLimits())
            image.thumbnail((THUMB_SIDE, THUMB_SIDE))
            self._thumbs[item_id] = encode_jpeg(image, 85)
            if len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        self._thumbs.move_to_end(item_id)
        return self._thumbs[item_id]

    def _hash_of(self, item: ReviewItem) -> str:
        """Suspect rows carry no content hash: hash the bytes (once) so ingest can match it."""
        if item.id not in self._hashes:
            self._hashes[item.id] = content_hash(storage.read_bytes(item.uri))
        return self._hashes[item.id]
