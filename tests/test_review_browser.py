"""The review page in a real headless Chromium (Debian's `chromium`, driven by Playwright):
keyboard review of a real tagging run's queue, the corrections log it leaves, a server
restart that keeps the decisions, two tabs, and requests outside the run refused.

Skips only where /usr/bin/chromium is missing (`make setup` installs it where it may).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from components.review.queue import load_queue
from tests.review_fixtures import tag_inbox, tone_tagger, write_inbox

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).parents[1]
# Offline and quiet: no first-run UI, no background downloads; --no-sandbox because CI and
# this machine run tests as root.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing: `apt-get install chromium` (make setup does it as root)",
)


@contextmanager
def review_server(folder: Path) -> Iterator[str]:
    """`gallerytag review FOLDER --port 0` in its own process; yields the page's URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from gallerytag.cli import main; main()",
               "review", str(folder), "--port", "0", "--reviewer", "browser-test"]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = None
        output = []
        for line in process.stdout:
            output.append(line)
            if "serving http://" in line:
                url = line.split("serving ", 1)[1].strip()
                break
        assert url, "".join(output)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _counter(page) -> str:
    return page.locator("#counter").inner_text()


def test_keyboard_review_restart_and_refusals(tmp_path: Path, screenshots: Path) -> None:
    """Enter / digit / x / arrow / undo on a real queue, then the log, a restart, two tabs."""
    from playwright.sync_api import expect, sync_playwright

    tagger = tone_tagger(tmp_path / "model")
    write_inbox(str(tmp_path / "inbox"))
    tags = tmp_path / "tags"
    assert tag_inbox(str(tmp_path / "inbox"), str(tags), tagger).review == 9
    queue = load_queue(str(tags))
    order = [item.uri for item in queue.items]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            with review_server(tags) as url:
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']")
                assert "lowest margin first" in page.locator("#ordering").inner_text()
                assert _counter(page) == "done 0 / left 9"
                assert page.locator(".card").count() == 9
                page.keyboard.press("Enter")  # item 0: accept the model's guess
                expect(page.locator("#counter")).to_have_text("done 1 / left 8")
                page.keyboard.press("3")  # item 1: the third label, bright
                expect(page.locator("#counter")).to_have_text("done 2 / left 7")
                page.keyboard.press("x")  # item 2: none of these
                expect(page.locator("#counter")).to_have_text("done 3 / left 6")
                page.keyboard.press("ArrowRight")  # skip item 3
                page.keyboard.press("1")  # item 4: dark
                expect(page.locator("#counter")).to_have_text("done 4 / left 5")
                page.keyboard.press("u")  # undo item 4
                expect(page.locator("#counter")).to_have_text("done 3 / left 6")
                page.keyboard.press("2")  # item 4 again: mid
                expect(page.locator("#counter")).to_have_text("done 4 / left 5")
                expect(page.locator("#message")).to_contain_text("saved")
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(screenshots / "review.png"), full_page=False)

                # What reaches storage outside the queue: nothing.
                outside = ("thumb/..%2F..%2Fetc%2Fpasswd", "thumb/../../etc/passwd", "etc/passwd",
                           "corrections.jsonl", f"thumb/{tags}/review.jsonl")  # fmt: skip
                for path in outside:
                    response = page.request.get(url + path)
                    assert response.status in (403, 404), path
                    assert b"root:" not in response.body()

            rows = [
                json.loads(line) for line in (tags / "corrections.jsonl").read_text().splitlines()
            ]
            assert [(r["decision"], r["label"]) for r in rows] == [
                ("accept", queue.items[0].top1),
                ("label", "bright"),
                ("none", None),
                ("label", "dark"),
                ("undo", None),
                ("label", "mid"),
            ]
            assert [r["uri"] for r in rows] == [
                order[0],
                order[1],
                order[2],
                order[4],
                order[4],
                order[4],
            ]
            assert all(r["reviewer"] == "browser-test" for r in rows)

            with review_server(tags) as url:  # a restart keeps every decision
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']")
                assert _counter(page) == "done 4 / left 5"
                assert page.locator(".card").count() == 5
                other = browser.new_page()
                other.goto(url)
                other.wait_for_selector("body[data-ready='1']")
                page.keyboard.press("Enter")  # both tabs show item 3 first
                expect(page.locator("#counter")).to_have_text("done 5 / left 4")
                other.keyboard.press("Enter")
                expect(other.locator("#message")).to_contain_text("already decided")
            decided = [
                json.loads(line) for line in (tags / "corrections.jsonl").read_text().splitlines()
            ]
            assert len(decided) == 7 and decided[-1]["uri"] == order[3]
        finally:
            browser.close()
