"""Label Studio interop, pure: a review queue as Label Studio tasks with predictions, and a
Label Studio JSON export (tasks with `annotations`) back as corrections rows.

Task shape: labelstud.io/guide/task_format (checked into `label_studio_task.schema.json`).
The labelling config `label_config()` returns names the same `from_name` / `to_name`.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from components.common import corrections
from components.review.queue import Queue

FROM_NAME = "tag"
TO_NAME = "image"
NONE_CHOICE = "none of these"  # "not an image of a tag": the review page's `x`


def _choice(label: str, score: float | None = None) -> dict:
    result = {
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "choices",
        "value": {"choices": [label]},
    }
    if score is not None:
        result["score"] = score
    return result


def export_tasks(queue: Queue, decided: set[str] = frozenset()) -> list[dict]:
    """One task per queue item not in `decided` (uris), in review order, each with the
    model's top-1 as a prediction (score = its probability)."""
    tasks = []
    for item in queue.items:
        if item.uri in decided:
            continue
        score = float(item.top[0]["score"]) if item.top else 0.0
        tasks.append(
            {
                "data": {
                    "image": item.uri,
                    "gallerytag_uri": item.uri,
                    "content_hash": item.content_hash,
                    "previous_top1": item.top1,
                    "given_label": item.given_label,
                },
                "predictions": [
                    {
                        "model_version": str(item.model_version or queue.model_version or ""),
                        "score": score,
                        "result": [_choice(item.top1, score)],
                    }
                ],
            }
        )
    return tasks


def label_config(labels: list[str]) -> str:
    """A Label Studio labelling config matching the exported tasks."""
    choices = "\n".join(
        f"    <Choice value={quoteattr(label)}/>" for label in [*labels, NONE_CHOICE]
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _reviewer(annotation: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id") or "label-studio")
    return str(who) if who is not None else "label-studio"


def import_export(tasks: list[dict], where: str = "Label Studio export") -> list[dict]:
    """Corrections rows from a Label Studio JSON export: each task's latest annotation that
    was not cancelled and holds a choice; tasks without one are skipped (not reviewed)."""
    if not isinstance(tasks, list):
        raise corrections.CorrectionsError(f"{where}: expected a JSON list of tasks")
    rows = []
    for number, task in enumerate(tasks):
        data = task.get("data") or {}
        uri = data.get("gallerytag_uri") or data.get("image")
        annotations = [
            a for a in task.get("annotations") or [] if not a.get("was_cancelled") and _choices(a)
        ]
        if not annotations:
            continue
        latest = max(annotations, key=lambda a: str(a.get("updated_at") or a.get("created_at")))
        choice = _choices(latest)[0]
        previous = data.get("previous_top1")
        if choice == NONE_CHOICE:
            decision, label = "none", None
        else:
            decision, label = ("accept" if choice == previous else "label"), choice
        versions = [p.get("model_version") for p in task.get("predictions") or []]
        row = {
            "schema_version": corrections.SCHEMA_VERSION,
            "uri": uri,
            "content_hash": data.get("content_hash"),
            "decision": decision,
            "label": label,
            "previous_top1": previous,
            "given_label": data.get("given_label"),
            "model_version": versions[0] if versions else None,
            "reviewer": _reviewer(latest),
            "time": latest.get("updated_at") or latest.get("created_at"),
            "source": "label-studio",
        }
        rows.append(corrections.check_row(row, f"{where} task {number}"))
    return rows


def _choices(annotation: dict) -> list[str]:
    for result in annotation.get("result") or []:
        if result.get("type") == "choices" and result.get("from_name") == FROM_NAME:
            return list((result.get("value") or {}).get("choices") or [])
    return []
