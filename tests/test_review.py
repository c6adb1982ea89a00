"""Review: the queue from a real tagging run, the corrections log (durable, locked, undo),
the web adapter's rules (ids only, token, host, write header) and Label Studio interop."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

from components.common import corrections, storage
from components.review.app import create_app
from components.review.labelstudio import NONE_CHOICE, export_tasks, import_export
from components.review.log import AlreadyDecided, CorrectionsLog
from components.review.queue import QueueError, load_queue
from components.review.session import ReviewSession
from tests.review_fixtures import TONES, tag_inbox, tone_tagger, write_inbox

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "components/review/label_studio_task.schema.json").read_text()
)
WRITE = {"X-Gallerytag-Review": "1"}


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tagging run whose nine rows all went to review."""
    root = tmp_path_factory.mktemp("review")
    tagger = tone_tagger(root / "model")
    write_inbox(str(root / "inbox"))
    summary = tag_inbox(str(root / "inbox"), str(root / "tags"), tagger)
    assert summary.review == 9
    return root


@pytest.fixture
def tags_dir(tagged: Path, tmp_path: Path) -> Path:
    """A fresh copy of the run's folder per test (each test starts with no corrections)."""
    copy = tmp_path / "tags"
    copy.mkdir()
    for path in (tagged / "tags").iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    return copy


def _client(folder: Path, token: str | None = None, loopback: bool = True) -> TestClient:
    queue = load_queue(str(folder))
    session = ReviewSession(queue, CorrectionsLog(queue.corrections_path), "tester")
    return TestClient(
        create_app(session, token=token, loopback=loopback), base_url="http://127.0.0.1"
    )


def test_queue_is_ordered_lowest_margin_first(tags_dir: Path) -> None:
    """All nine review rows, labels from _SUCCESS.json, least sure first."""
    queue = load_queue(str(tags_dir))
    assert queue.kind == "tags" and queue.labels == TONES
    margins = [item.margin for item in queue.items]
    assert len(margins) == 9 and margins == sorted(margins) and margins[0] < margins[-1]
    assert all(len(item.top) == 3 for item in queue.items)
    assert "lowest margin first" in queue.ordering


def test_not_a_queue_is_a_clear_error(tmp_path: Path) -> None:
    """A folder with neither marker names both accepted kinds."""
    with pytest.raises(QueueError, match=r"gallerytag tag.*gallerytag evaluate"):
        load_queue(str(tmp_path))


def test_decisions_are_logged_kept_and_undone(tags_dir: Path) -> None:
    """accept / label / none rows carry the contract's fields; a second decision on the same
    image is refused; undo appends; a new session (restart) sees what is in force."""
    client = _client(tags_dir)
    page = client.get("/api/queue").json()
    assert (page["done"], page["left"], len(page["items"])) == (0, 9, 9)
    first, second, third = (item["id"] for item in page["items"][:3])
    accepted = client.post("/api/decide", json={"id": first, "decision": "accept"}, headers=WRITE)
    assert accepted.status_code == 200 and accepted.json()["done"] == 1
    relabel = {"id": second, "decision": "label", "label": "bright"}
    assert client.post("/api/decide", json=relabel, headers=WRITE).status_code == 200
    none = {"id": third, "decision": "none"}
    assert client.post("/api/decide", json=none, headers=WRITE).status_code == 200
    again = client.post("/api/decide", json={"id": first, "decision": "none"}, headers=WRITE)
    assert again.status_code == 409 and "already decided" in again.json()["error"]
    fourth = page["items"][3]["id"]
    bad = {"id": fourth, "decision": "label", "label": "not-a-model-label"}
    assert client.post("/api/decide", json=bad, headers=WRITE).status_code == 400
    assert client.post("/api/undo", json={"id": third}, headers=WRITE).json()["done"] == 2

    rows = [json.loads(line) for line in (tags_dir / "corrections.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in rows] == ["accept", "label", "none", "undo"]
    queue = load_queue(str(tags_dir))
    by_id = queue.by_id
    for row in rows[:3]:
        for key in ("uri", "content_hash", "label", "previous_top1", "model_version",
                    "reviewer", "time"):  # fmt: skip
            assert key in row, key
        assert row["reviewer"] == "tester" and row["model_version"] == "1"
    assert rows[0]["label"] == by_id[first].top1 == rows[0]["previous_top1"]
    assert rows[0]["content_hash"] == by_id[first].content_hash
    assert rows[1]["label"] == "bright" and rows[2]["label"] is None

    restarted = _client(tags_dir).get("/api/queue").json()
    assert (restarted["done"], restarted["left"]) == (2, 7)
    assert {item["id"] for item in restarted["items"]}.isdisjoint({first, second})
    assert third in {item["id"] for item in restarted["items"]}


def test_two_writers_never_double_decide(tags_dir: Path) -> None:
    """Two logs on one file (as two processes or tabs) race on every item: each image gets
    exactly one decision and every line of the file is whole."""
    queue = load_queue(str(tags_dir))
    logs = [CorrectionsLog(queue.corrections_path) for _ in range(2)]
    wins = [0, 0]

    def reviewer(number: int) -> None:
        session = ReviewSession(queue, logs[number], f"r{number}")
        for item in queue.items:
            try:
                session.decide(item.id, "accept")
                wins[number] += 1
            except AlreadyDecided:
                pass

    threads = [threading.Thread(target=reviewer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = corrections.read_rows(queue.corrections_path)  # raises on a torn line
    assert sum(wins) == len(rows) == 9
    assert sorted(r["uri"] for r in rows) == sorted(item.uri for item in queue.items)


def test_only_queue_ids_are_served(tags_dir: Path) -> None:
    """Thumbnails by id only; traversal, raw paths and unknown routes are 404."""
    client = _client(tags_dir)
    item = client.get("/api/queue").json()["items"][0]
    thumb = client.get(f"/thumb/{item['id']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"
    for path in (
        "/thumb/..%2F..%2Fetc%2Fpasswd",
        "/thumb/../../etc/passwd",
        "/thumb/%2Fetc%2Fpasswd",
        f"/thumb/{item['id']}/../../corrections.jsonl",
        "/etc/passwd",
        "/static/../../etc/passwd",
        "/corrections.jsonl",
        "/review.jsonl",
        "/thumb/" + "0" * 16,
    ):
        response = client.get(path)
        assert response.status_code in (403, 404), path
        assert b"root:" not in response.content


def test_writes_need_the_header_and_token_is_checked_everywhere(tags_dir: Path) -> None:
    """No write header: 403. With a token, every route refuses a request without it."""
    client = _client(tags_dir)
    item = client.get("/api/queue").json()["items"][0]
    assert (
        client.post("/api/decide", json={"id": item["id"], "decision": "accept"}).status_code == 403
    )

    secured = _client(tags_dir, token="s3cret", loopback=False)
    for path in ("/", "/api/queue", f"/thumb/{item['id']}"):
        assert secured.get(path).status_code == 403, path
        assert secured.get(path, params={"token": "wrong"}).status_code == 403, path
    assert secured.post("/api/decide", json={"id": item["id"]}, headers=WRITE).status_code == 403
    opened = secured.get("/", params={"token": "s3cret"})
    assert opened.status_code == 200 and "HttpOnly" in opened.headers["set-cookie"]
    assert secured.get("/api/queue").status_code == 200  # the cookie now carries it
    header_only = _client(tags_dir, token="s3cret", loopback=False)
    assert header_only.get("/api/queue", headers={"X-Review-Token": "s3cret"}).status_code == 200


def test_loopback_server_refuses_foreign_host_headers(tags_dir: Path) -> None:
    """Without a token the server answers only to 127.0.0.1 / localhost (DNS rebinding)."""
    client = _client(tags_dir)
    assert client.get("/api/queue", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/queue", headers={"host": "localhost:8765"}).status_code == 200


def test_binding_beyond_loopback_needs_a_token(tags_dir: Path) -> None:
    """`gallerytag review --host 0.0.0.0` without --token fails before serving."""
    from gallerytag.cli import cli

    result = CliRunner().invoke(cli, ["review", str(tags_dir), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "--token" in result.output


def test_gs_run_thumbnails_through_storage(
    tagged: Path, gcs_bucket: str, beam_gcs_anonymous: str, tmp_path: Path
) -> None:
    """A tagging run on gs:// (emulator) is reviewed with a local log; thumbnails come
    through the storage layer; a gs:// log is refused with the fix."""
    tagger = tone_tagger(tmp_path / "model")
    inbox = f"gs://{gcs_bucket}/inbox"
    write_inbox(inbox, levels=(60, 128, 200))
    out = f"gs://{gcs_bucket}/tags"
    assert tag_inbox(inbox, out, tagger).review == 3
    queue = load_queue(out)
    with pytest.raises(ValueError, match="--corrections LOCAL_PATH"):
        CorrectionsLog(queue.corrections_path)
    session = ReviewSession(queue, CorrectionsLog(str(tmp_path / "c.jsonl")), "tester")
    client = TestClient(create_app(session), base_url="http://127.0.0.1")
    item = client.get("/api/queue").json()["items"][0]
    assert client.get(f"/thumb/{item['id']}").content[:2] == b"\xff\xd8"
    saved = client.post("/api/decide", json={"id": item["id"], "decision": "accept"}, headers=WRITE)
    assert saved.json()["row"]["uri"].startswith(f"gs://{gcs_bucket}/inbox/")


def test_label_studio_export_validates_and_round_trips(tags_dir: Path, tmp_path: Path) -> None:
    """Export -> (annotate as Label Studio would) -> import gives corrections rows that the
    ingest reader accepts, with accept / label / none as chosen; tasks are schema-valid."""
    from gallerytag.cli import cli

    validator = Draft202012Validator(SCHEMA)
    out = tmp_path / "tasks.json"
    result = CliRunner().invoke(cli, ["review", "export", str(tags_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text())
    validator.validate(tasks)
    assert len(tasks) == 9
    first = tasks[0]["predictions"][0]
    assert first["model_version"] == "1" and first["result"][0]["type"] == "choices"
    assert first["result"][0]["value"]["choices"] == [tasks[0]["data"]["previous_top1"]]
    assert 'value="bright"' in (tmp_path / "tasks.xml").read_text()

    other = next(label for label in TONES if label != tasks[1]["data"]["previous_top1"])
    choices = [tasks[0]["data"]["previous_top1"], other, NONE_CHOICE]
    for task, choice in zip(tasks, choices, strict=False):
        result_shape = {"from_name": "tag", "to_name": "image", "type": "choices",
                        "value": {"choices": [choice]}}  # fmt: skip
        task["annotations"] = [
            {"id": 1, "result": [result_shape], "completed_by": {"email": "ann@example.org"},
             "was_cancelled": False, "created_at": "2026-12-01T10:00:00Z"}
        ]  # fmt: skip
    validator.validate(tasks)
    exported = tmp_path / "export.json"
    exported.write_text(json.dumps(tasks))
    back = tmp_path / "corrections.jsonl"
    result = CliRunner().invoke(cli, ["review", "import", str(exported), "--out", str(back)])
    assert result.exit_code == 0, result.output
    rows = corrections.read_rows(str(back))
    assert [r["decision"] for r in rows] == ["accept", "label", "none"]
    assert [r["uri"] for r in rows] == [t["data"]["gallerytag_uri"] for t in tasks[:3]]
    assert rows[1]["label"] == other and rows[0]["reviewer"] == "ann@example.org"
    loaded = corrections.load_corrections([str(back)])
    assert loaded.lookup("elsewhere", tasks[2]["data"]["content_hash"]).label is None

    # Images decided on the page are not exported again.
    queue = load_queue(str(tags_dir))
    assert len(export_tasks(queue, {queue.items[0].uri})) == 8
    assert import_export([{"data": {"image": "x"}, "annotations": []}]) == []
    assert storage.exists(str(back))


def test_suspects_queue_from_an_evaluation_folder(tmp_path: Path) -> None:
    """suspects.jsonl rows (from the real finder) become items with the given label and the
    model's top 3; deciding one hashes the image so ingest can match it by content."""
    import numpy as np

    from components.common.images import content_hash
    from components.evaluate.suspects import find_suspects
    from tests.review_fixtures import grey_jpeg

    names = ["cat", "dog"]
    # Twelve images in each of two clusters; image 4 sits with the cats but is labelled dog.
    embeddings = np.repeat(np.eye(2), 12, axis=0) + np.linspace(0, 0.01, 24)[:, None]
    labels = np.repeat([0, 1], 12)
    labels[4] = 1
    probabilities = np.repeat([[0.9, 0.1], [0.1, 0.9]], 12, axis=0)
    rows = find_suspects(embeddings, probabilities, labels, names)
    assert [row["index"] for row in rows] == [4]
    image = tmp_path / "images" / "four.jpg"
    image.parent.mkdir()
    image.write_bytes(grey_jpeg(90, 4))
    rows[0]["uri"] = str(image)
    del rows[0]["index"]
    folder = tmp_path / "evaluation"
    folder.mkdir()
    (folder / "suspects.jsonl").write_text(json.dumps(rows[0]) + "\n")
    per_class = [{"label": name} for name in names]
    (folder / "evaluation.json").write_text(
        json.dumps({"per_class": per_class, "model_version": "7"})
    )

    queue = load_queue(str(folder))
    assert queue.kind == "suspects" and queue.labels == names
    item = queue.items[0]
    assert (item.given_label, item.top1, [t["label"] for t in item.top]) == ("dog", "cat", names)
    assert item.margin == pytest.approx(0.8)
    session = ReviewSession(queue, CorrectionsLog(queue.corrections_path), "tester")
    row = session.decide(item.id, "accept")
    assert row["content_hash"] == content_hash(image.read_bytes())
    assert (row["label"], row["given_label"], row["model_version"]) == ("cat", "dog", "7")
