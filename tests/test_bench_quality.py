"""bench/quality.py goes on where it stopped: runs already in its results file are not redone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.quality import finished_runs


def row(gallery: str, seed: int, top1: float, **extra: object) -> str:
    """One results line as `one_run` writes it (only the fields the lookup reads, plus top1)."""
    return json.dumps({"gallery": gallery, "seed": seed, "top1": top1, **extra})


def test_finished_runs_match_gallery_seed_and_train_args(tmp_path: Path) -> None:
    """A run counts as done only with the same train arguments; old rows were defaults."""
    results = tmp_path / "results.jsonl"
    results.write_text(
        "\n".join(
            [
                row("clipart8", 0, 0.70),  # written before train_args was recorded: defaults
                row("clipart8", 1, 0.71, train_args=[]),
                row("clipart8", 1, 0.60, train_args=["--finetune-blocks", "4"]),
                "",
                row("fashion100", 0, 0.85, train_args=["--finetune-blocks", "4"]),
            ]
        )
        + "\n"
    )
    defaults = finished_runs(results, [])
    assert sorted(defaults) == [("clipart8", 0), ("clipart8", 1)]
    assert defaults[("clipart8", 1)]["top1"] == 0.71
    variant = finished_runs(results, ["--finetune-blocks", "4"])
    assert sorted(variant) == [("clipart8", 1), ("fashion100", 0)]
    assert variant[("clipart8", 1)]["top1"] == 0.60
    assert finished_runs(tmp_path / "none.jsonl", []) == {}


def test_a_broken_results_line_names_the_file_and_line(tmp_path: Path) -> None:
    """A line that is not JSON stops the benchmark, naming where it is."""
    results = tmp_path / "results.jsonl"
    results.write_text(row("clipart8", 0, 0.70) + "\n{not json\n")
    with pytest.raises(SystemExit, match=r"results\.jsonl:2 is not JSON"):
        finished_runs(results, [])
