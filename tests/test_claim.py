"""The output claim: one run per output folder, stale claims and staging taken over, and the
marker refused when the files in place do not match the counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.common import beam_io, claim, gcs, storage
from components.common.claim import OutputBusy, acquire, claim_output

ROOT = Path(__file__).resolve().parents[1]


def test_a_held_output_is_refused_and_free_again_after_release(tmp_path: Path) -> None:
    """A second claim on a held folder fails naming the holder; after release it succeeds."""
    out = str(tmp_path / "out")
    first = acquire(out)
    with pytest.raises(OutputBusy, match=f"pid {os.getpid()}.*another output"):
        acquire(out)
    first.release()
    assert not (tmp_path / "out" / claim.CLAIM_NAME).exists()
    acquire(out).release()


def test_a_claim_of_a_killed_run_is_taken_over_with_its_staging(tmp_path: Path) -> None:
    """A SIGKILLed holder leaves its claim and staging; the next run proves them stale."""
    out = tmp_path / "out"
    code = (
        "import sys, time; from components.common.claim import claim_output;"
        "cm = claim_output(sys.argv[1]); print(cm.__enter__().staging, flush=True);"
        "time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], cwd=ROOT, text=True, stdout=subprocess.PIPE, env=env
    )
    staging = holder.stdout.readline().strip()
    (Path(staging) / "part.jsonl").write_text("{}\n")
    with pytest.raises(OutputBusy, match=f"pid {holder.pid}"):
        acquire(str(out))  # alive: refused
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with claim_output(str(out)) as mine:
        assert not Path(staging).exists()
        assert Path(mine.staging).is_dir()
    assert [p.name for p in out.iterdir()] == [Path(mine.staging).name]  # kept to inspect


def test_another_runs_staging_survives_a_commit(tmp_path: Path) -> None:
    """Committing removes only this run's staging: a folder of a run that holds no claim is
    removed when the claim is taken, never during someone's commit."""
    out = tmp_path / "out"
    with claim_output(str(out)) as mine:
        Path(mine.staging, "rows.jsonl").write_text('{"a": 1}\n')
        foreign = out / ".staging-foreign"  # appears after our claim: not ours to judge
        foreign.mkdir()
        beam_io.commit_staged(mine, "_DONE", "{}", lambda name: name == "rows.jsonl",
                              lambda files: None)  # fmt: skip
    assert foreign.is_dir() and (out / "_DONE").exists() and (out / "rows.jsonl").exists()


def test_marker_is_refused_when_committed_files_do_not_match(tmp_path: Path) -> None:
    """verify sees the files in place; when it refuses, no marker is written."""
    out = tmp_path / "out"

    def verify(files: list[str]) -> None:
        lines = sum(len(storage.read_text(f).splitlines()) for f in files)
        if lines != 2:
            raise RuntimeError(f"{lines} rows on disk, 2 counted")

    with claim_output(str(out)) as mine:
        Path(mine.staging, "rows.jsonl").write_text('{"a": 1}\n')  # one row lost
        with pytest.raises(RuntimeError, match="1 rows on disk"):
            beam_io.commit_staged(mine, "_DONE", "{}", lambda n: n == "rows.jsonl", verify)
    assert not (out / "_DONE").exists()


def test_gcs_claim_is_exclusive_and_stale_after_silence(gcs_bucket: str, monkeypatch) -> None:
    """On gs:// a live claim refuses a second run; one silent for STALE_S is taken over; a
    run whose claim was taken over cannot commit."""
    out = f"gs://{gcs_bucket}/tags"
    first = acquire(out)
    try:
        assert json.loads(storage.read_text(first.path))["run_id"] == first.run_id
        with pytest.raises(OutputBusy, match="another gallerytag run"):
            acquire(out)
        monkeypatch.setattr(claim, "STALE_S", 0.0)
        time.sleep(0.01)
        second = acquire(out)
        with pytest.raises(OutputBusy, match="took over"):
            first.verify()
        second.verify()
        second.release()
        assert not storage.exists(second.path)
    finally:
        first._stop.set()


def test_gcs_heartbeat_keeps_the_claim_fresh(gcs_bucket: str, monkeypatch) -> None:
    """The holder rewrites its claim (new generation) and still verifies as the owner."""
    monkeypatch.setattr(claim, "HEARTBEAT_S", 0.05)
    held = acquire(f"gs://{gcs_bucket}/tags")
    try:
        first_generation = held.generation
        deadline = time.monotonic() + 10
        while held.generation == first_generation and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.generation != first_generation and held.lost is None
        held.verify()
        assert "heartbeat" in json.loads(storage.read_text(held.path))
    finally:
        held.release()
    assert not storage.exists(held.path)


def test_two_gcs_claims_racing_exactly_one_wins(fake_gcs_bucket: str, monkeypatch) -> None:
    """Two runs both find no claim on gs:// and both create it at once: the generation-0
    precondition lets exactly one in; the other is refused naming the winner. Needs an
    emulator that enforces ifGenerationMatch (fake-gcs-server; gcp-storage-emulator lets
    both in)."""
    import threading

    out = f"gs://{fake_gcs_bucket}/tags"
    both_looked = threading.Barrier(2, timeout=30)
    first_look = threading.local()
    real_generation = gcs.generation_of

    def look_then_wait(url: str):
        """The real read; each run's first look waits for the other's, so both saw none."""
        seen = real_generation(url)
        if not getattr(first_look, "done", False):
            first_look.done = True
            both_looked.wait()
        return seen

    monkeypatch.setattr(gcs, "generation_of", look_then_wait)
    outcomes: list = [None, None]

    def contend(index: int) -> None:
        try:
            outcomes[index] = acquire(out)
        except Exception as error:  # the loser's refusal is the result under test
            outcomes[index] = error

    threads = [threading.Thread(target=contend, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    monkeypatch.setattr(gcs, "generation_of", real_generation)
    winners = [o for o in outcomes if isinstance(o, claim.OutputClaim)]
    losers = [o for o in outcomes if not isinstance(o, claim.OutputClaim)]
    try:
        assert len(winners) == 1 and len(losers) == 1, outcomes
        winner, refusal = winners[0], losers[0]
        assert isinstance(refusal, OutputBusy)
        assert f"run {winner.run_id}" in str(refusal) and "another output" in str(refusal)
        assert json.loads(storage.read_text(winner.path))["run_id"] == winner.run_id
        winner.verify()
    finally:
        for won in winners:
            won.release()
    assert not storage.exists(f"{out}/{claim.CLAIM_NAME}")
