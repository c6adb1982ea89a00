"""The CPU image, really built and run: ingest -> train (horovodrun -np 2) -> tag inside it.

`make image-cpu` builds it (podman/buildah without a daemon, layers reused when present), then
every command runs as the pods run it: uid 1000, read-only root filesystem, no network, the
data and /tmp (GALLERYTAG_HOME, the embedded MLflow) on bind mounts. The results are read on
the host. Needs root, podman, buildah and runc (`make image-tools` installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from components.train import mpijob
from tests.conftest import write_pattern_gallery

BUILD_TIMEOUT_S = 30 * 60  # cold: base, pip install of the stack, maybe Horovod's compile
RUN_TIMEOUT_S = 15 * 60
# The first test's setup builds the image: a cold build alone can pass the suite's 900 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT_S + RUN_TIMEOUT_S)]
ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/gallerytag-test"
LABELS = ("horizontal", "square", "vertical")
PER_CLASS = 24


def _missing_tools() -> list[str]:
    return [tool for tool in ("podman", "buildah", "runc") if shutil.which(tool) is None]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Build the CPU image once for the module; its tag is what `make` recorded."""
    missing = _missing_tools()
    if missing or os.geteuid() != 0:
        pytest.skip(
            f"needs root and podman/buildah/runc (missing: {missing or 'root'}); "
            "run `make image-tools` as root"
        )
    ref_file = tmp_path_factory.mktemp("image") / "cpu.ref"
    started = time.monotonic()
    completed = subprocess.run(
        ["make", "--no-print-directory", "image-cpu", f"IMAGE={IMAGE}", f"IMAGE_REF={ref_file}"],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
    )  # fmt: skip
    print(f"image build: {time.monotonic() - started:.0f} s")
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    ref = ref_file.read_text().strip()
    assert ref == f"{IMAGE}:cpu"
    return ref


def podman_run(image: str, mounts: dict[Path, str], *args: str, entrypoint: str = "") -> str:
    """Run the image the way the manifests do (uid 1000, read-only root, no network)."""
    command = ["podman", "run", "--rm", "--user", "1000:1000", "--read-only",
               "--read-only-tmpfs=false", "--network", "none"]  # fmt: skip
    for host, target in mounts.items():
        command += ["-v", f"{host}:{target}"]
    if entrypoint:
        command += ["--entrypoint", entrypoint]
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "k8s" / "images" / "containers.conf")}
    completed = subprocess.run(
        [*command, image, *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        check=False, env=env,
    )  # fmt: skip
    assert completed.returncode == 0, (
        f"{' '.join(args)} failed ({completed.returncode}):\n"
        + completed.stdout[-4000:] + completed.stderr[-6000:]
    )  # fmt: skip
    return completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Host folders mounted writable into the container (uid 1000 must write them)."""
    root = tmp_path_factory.mktemp("in-image")
    data, tmp = root / "data", root / "tmp"
    write_pattern_gallery(data / "gallery", PER_CLASS, LABELS)
    tmp.mkdir()
    for folder in (root, data, tmp, *data.rglob("*")):
        folder.chmod(0o777 if folder.is_dir() else 0o644)
    return {"data": data, "tmp": tmp}


def test_image_runs_as_uid_1000_on_a_read_only_root(image: str, workdir: dict[str, Path]) -> None:
    """The user is the MPIJob's, the root filesystem refuses writes, /tmp takes them."""
    mounts = {workdir["tmp"]: "/tmp"}
    script = (
        "id -u; touch /opt/venv/probe 2>/dev/null && echo root-writable || echo root-read-only;"
        " touch /tmp/probe && echo tmp-writable"
    )
    out = podman_run(image, mounts, "-c", script, entrypoint="/bin/sh").split()
    assert out == [str(mpijob.RUN_AS_USER), "root-read-only", "tmp-writable"]


def test_ingest_train_tag_inside_the_image(image: str, workdir: dict[str, Path]) -> None:
    """The embedded path, every step in the image; outputs checked on the host."""
    data, tmp = workdir["data"], workdir["tmp"]
    mounts = {data: "/data", tmp: "/tmp"}
    timings = {}

    started = time.monotonic()
    podman_run(image, mounts, "ingest", "/data/gallery", "--out", "/data/dataset",
               "--image-size", "40")  # fmt: skip
    timings["ingest"] = time.monotonic() - started
    manifest = json.loads((data / "dataset" / "manifest.json").read_text())
    counts = manifest["counts"]  # split -> label -> images
    assert sum(sum(per_label.values()) for per_label in counts.values()) == 3 * PER_CLASS

    started = time.monotonic()
    out = podman_run(image, mounts, "train", "--data", "/data/dataset", "--workers", "2",
                     "--finetune-epochs", "1", "--batch-size", "8",
                     "--experiment", "in-image", "--registered-model", "in-image")  # fmt: skip
    timings["train"] = time.monotonic() - started
    assert "training finished" in out
    # The embedded MLflow kept its database and the model under GALLERYTAG_HOME=/tmp/gallerytag.
    home = tmp / "gallerytag"
    with contextlib.closing(sqlite3.connect(home / "mlflow.db")) as db:
        assert db.execute("select value from params where key = 'workers'").fetchall() == [("2",)]
        # Rank 0 tags the run with Horovod's world size: two ranks really ran (their own
        # output is hidden unless -v, so it cannot be looked for).
        world = db.execute("select value from tags where key = 'world_size'").fetchall()
        assert world == [("2",)], "horovodrun started no rank 1"
        assert db.execute("select status from runs").fetchall() == [("FINISHED",)]
        versions = db.execute("select name, version, status from model_versions").fetchall()
    assert versions == [("in-image", 1, "READY")]
    assert list((home / "mlartifacts").rglob("MLmodel"))

    started = time.monotonic()
    podman_run(image, mounts, "tag", "/data/gallery", "--model", "models:/in-image/1",
               "--out", "/data/tags", "--min-score", "0.5")  # fmt: skip
    timings["tag"] = time.monotonic() - started
    run = json.loads((data / "tags" / "_SUCCESS.json").read_text())
    assert run["seen"] == 3 * PER_CLASS == run["auto"] + run["review"] + run["rejected"]
    rows = [json.loads(line) for path in sorted((data / "tags").glob("tags-*.jsonl"))
            for line in path.read_text().splitlines()]  # fmt: skip
    assert sorted(row["uri"] for row in rows) == sorted(
        f"/data/{path.relative_to(data)}" for path in (data / "gallery").rglob("*.jpg")
    )
    assert {row["model_version"] for row in rows} == {"1"}
    # The model trained in the image tags the synthetic classes well above chance (1/3).
    right = sum(row["top1"] == Path(row["uri"]).parent.name for row in rows)
    assert right / len(rows) > 0.6, f"{right} of {len(rows)} right"
    print("in-image timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


def test_pipelines_and_mpijob_name_the_built_image(image: str, tmp_path: Path) -> None:
    """Compiled with the ref `make` recorded, every KFP step and the MPIJob default use it."""
    out = tmp_path / "pipelines"
    subprocess.run(
        [sys.executable, "-c", "from gallerytag.cli import main; main()",
         "pipeline", "compile", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True,
        env={**os.environ, "GALLERYTAG_IMAGE": image, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    for name in ("training.yaml", "tagging.yaml"):
        spec = yaml.safe_load((out / name).read_text())
        executors = spec["deploymentSpec"]["executors"].values()
        assert {executor["container"]["image"] for executor in executors} == {image}, name
    training = yaml.safe_load((out / "training.yaml").read_text())
    parameter = training["root"]["inputDefinitions"]["parameters"]["mpijob_image"]
    assert parameter["defaultValue"] == image
