"""Model quality of the default recipe against its own linear probe, over split seeds.

Runs the default CLI path, `gallerytag ingest --split-seed S` -> `gallerytag train` (all
defaults) -> `gallerytag evaluate`, on several galleries and seeds, and reads the fine-tuned
and probe figures from each evaluation.json (the probe is fitted by `evaluate` on the same
split). Prints one row per run, then mean and spread per gallery, and the gap.

    python bench/quality.py --galleries clipart8,fashion100 --seeds 0,1,2

Galleries: clipart8 (../shared/data/clipart8), fashion50 / fashion100 / fashion300
(Fashion-MNIST, that many images per class), winter2 (2 labels from Fashion-MNIST:
coat + pullover + ankle boot vs sandal + T-shirt + dress, the winter / not-winter shape).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIPART = ROOT.parent / "shared" / "data" / "clipart8"
WINTER = {
    "winter": ("coat", "pullover", "ankle_boot"),
    "not_winter": ("sandal", "tshirt_top", "dress"),
}


def fashion_gallery(folder: Path, per_class: int) -> Path:
    """Fashion-MNIST as class folders, `per_class` images each (demo's materialiser)."""
    from gallerytag.gallery import materialise_gallery

    if not (folder / "gallery").exists():
        materialise_gallery(folder, per_class, inbox_size=0, seed=0)
    return folder / "gallery"


def winter_gallery(folder: Path, per_source_class: int = 100) -> Path:
    """Two labels, each the union of three Fashion-MNIST classes."""
    source = fashion_gallery(folder / "fashion", per_source_class)
    target = folder / "winter2"
    if not target.exists():
        for label, classes in WINTER.items():
            (target / label).mkdir(parents=True)
            for name in classes:
                for image in sorted((source / name).glob("*.jpg")):
                    (target / label / f"{name}_{image.name}").symlink_to(image)
    return target


def gallery_source(name: str, work: Path) -> Path:
    """The ingest source folder of a named benchmark gallery."""
    if name == "clipart8":
        return CLIPART
    if name.startswith("fashion"):
        return fashion_gallery(work / name, int(name.removeprefix("fashion")))
    if name == "winter2":
        return winter_gallery(work / "winter")
    raise SystemExit(f"unknown gallery {name!r}")


def cli(*args: str) -> float:
    """Run one `gallerytag` command; its wall seconds (fails loudly on error)."""
    started = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "gallerytag"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if completed.returncode != 0:
        raise SystemExit(f"gallerytag {' '.join(args)} failed:\n{completed.stderr[-3000:]}")
    return time.perf_counter() - started


def one_run(gallery: str, source: Path, seed: int, work: Path, extra: list[str]) -> dict:
    """ingest -> train -> evaluate for one gallery and split seed; the figures."""
    name = f"q-{gallery}-s{seed}-{int(time.time())}"
    data, evaluation = work / "runs" / name / "dataset", work / "runs" / name / "evaluation"
    ingest_s = cli("ingest", str(source), "--out", str(data), "--split-seed", str(seed))
    train_s = cli("train", "--data", str(data), "--registered-model", name,
                  "--experiment", "bench-quality", *extra)  # fmt: skip
    evaluate_s = cli("evaluate", "--model", f"models:/{name}/1", "--data", str(data),
                     "--out", str(evaluation))  # fmt: skip
    result = json.loads((evaluation / "evaluation.json").read_text())
    manifest = json.loads((data / "manifest.json").read_text())
    return {
        "gallery": gallery,
        "seed": seed,
        "train_images": sum(manifest["counts"]["train"].values()),
        "test_images": result["images"],
        "top1": result["top1"]["value"],
        "top3": result["top3"]["value"],
        "probe_top1": result["probe"]["top1"]["value"],
        "probe_top3": result["probe"]["top3"]["value"],
        "ingest_s": round(ingest_s, 1),
        "train_s": round(train_s, 1),
        "evaluate_s": round(evaluate_s, 1),
        "train_args": extra,
    }


def finished_runs(results: Path, extra: list[str]) -> dict[tuple[str, int], dict]:
    """Runs already in the results file with these train arguments, by (gallery, seed).

    Lets an interrupted or extended benchmark go on where it stopped: a run of ~15 minutes is
    not redone. Rows written before `train_args` was recorded were all-default runs.
    """
    done: dict[tuple[str, int], dict] = {}
    if results.exists():
        for number, line in enumerate(results.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                message = f"{results}:{number} is not JSON ({error}); fix or remove that line"
                raise SystemExit(message) from None
            if row.get("train_args", []) == extra:
                done[(row["gallery"], row["seed"])] = row
    return done


def summarise(rows: list[dict]) -> None:
    """Mean and spread per gallery, and the gap to the probe."""
    print("\ngallery     runs  top-1 (mean±sd)  probe top-1     gap (min)        "
          "top-3   probe top-3  train s")  # fmt: skip
    for gallery in dict.fromkeys(row["gallery"] for row in rows):
        mine = [row for row in rows if row["gallery"] == gallery]
        top1 = np.array([r["top1"] for r in mine])
        probe = np.array([r["probe_top1"] for r in mine])
        gap = top1 - probe
        print(
            f"{gallery:<11} {len(mine):>4}  {top1.mean():.3f}±{top1.std():.3f}     "
            f"{probe.mean():.3f}±{probe.std():.3f}  {gap.mean():+.3f} ({gap.min():+.3f})  "
            f"{np.mean([r['top3'] for r in mine]):.3f}   "
            f"{np.mean([r['probe_top3'] for r in mine]):.3f}        "
            f"{np.mean([r['train_s'] for r in mine]):.0f}"
        )


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galleries", default="clipart8,fashion50,fashion100,fashion300,winter2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", default=str(ROOT / "build" / "bench-quality"))
    parser.add_argument("--results", default=None, help="append one JSON line per run here")
    parser.add_argument(
        "--redo", action="store_true",
        help="run every gallery and seed again, even those already in the results file",
    )  # fmt: skip
    parser.add_argument("train_args", nargs="*", help="extra `gallerytag train` arguments")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = Path(args.results or work / "results.jsonl")
    os.environ["GALLERYTAG_HOME"] = str(work / "home")

    from components.common.tracking import tracking

    done = {} if args.redo else finished_runs(results, args.train_args)
    rows = []
    with tracking():  # one MLflow server for every command of the benchmark
        for gallery in args.galleries.split(","):
            source = gallery_source(gallery, work)
            for seed in (int(s) for s in args.seeds.split(",")):
                if (gallery, seed) in done:
                    rows.append(done[(gallery, seed)])
                    print(f"already in {results}: {json.dumps(done[(gallery, seed)])}", flush=True)
                    continue
                row = one_run(gallery, source, seed, work, args.train_args)
                rows.append(row)
                print(json.dumps(row), flush=True)
                with results.open("a") as stream:
                    stream.write(json.dumps(row) + "\n")
    summarise(rows)


if __name__ == "__main__":
    main()
