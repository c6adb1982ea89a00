"""Start a training: check inputs, make MLflow reachable, then run N Horovod workers.

Everything that can be wrong with the request is checked here, in seconds, before any
worker process (and its TensorFlow import) starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.common import dataset, progress, storage
from components.common.tracking import gallerytag_home, tracking
from components.train.config import TrainConfig


@dataclass(frozen=True)
class TrainResult:
    """What a finished training produced."""

    run_id: str
    model_uri: str
    registered_model: str | None
    version: str | None


def preflight(config: TrainConfig) -> dataset.Manifest:
    """Reject a bad request with a message naming the fix, before anything expensive runs."""
    from models.registry import BACKBONES  # light: the registry table imports no weights

    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}")
    if config.workers < 1:
        raise ValueError(f"--workers must be at least 1, not {config.workers}")
    if not config.data:
        raise ValueError("no dataset given: pass --data DATASET_DIR (from `gallerytag ingest`)")
    manifest = dataset.read_manifest(config.data)
    if manifest.split_size("train") == 0:
        raise dataset.DatasetError(
            f"{config.data} has no training images; ingest more images or change split ratios"
        )
    if len(manifest.labels) < 2:
        raise dataset.DatasetError(
            f"{config.data} has {len(manifest.labels)} label(s); a tagger needs at least 2"
        )
    check_label_ids(config.data, manifest)
    return manifest


def check_label_ids(data: str, manifest: dataset.Manifest, sample: int = 2000) -> None:
    """Catch shards written with another label map (a mixed-up dataset folder) early."""
    import tensorflow as tf

    from components.common.tfdata import FEATURES

    for split in dataset.SPLITS:
        files = dataset.shard_paths(data, manifest, split)
        if not files or manifest.split_size(split) == 0:
            continue
        for record in tf.data.TFRecordDataset(files).take(sample):
            label = int(tf.io.parse_single_example(record, FEATURES)[dataset.FEATURE_LABEL])
            if not 0 <= label < len(manifest.labels):
                raise dataset.DatasetError(
                    f"{data}: a {split} shard holds label id {label} but manifest.json lists "
                    f"{len(manifest.labels)} labels; the shards and the manifest come from "
                    "different ingests. Re-ingest into an empty folder."
                )


def check_writable(folder: str) -> None:
    """Fail now, not after the first epoch, when checkpoints cannot be written."""
    probe = storage.join(folder, ".write-probe")
    try:
        storage.makedirs(folder)
        storage.write_text(probe, "ok")
        storage.delete(probe)
    except OSError as error:
        raise OSError(
            f"cannot write checkpoints to {folder} ({error}); pass a writable "
            "--checkpoint-dir or fix the permissions"
        ) from None


@contextlib.contextmanager
def training_claim(checkpoint_dir: str) -> Iterator[None]:
    """Hold the checkpoint folder for the whole training: a second identical `train` started
    meanwhile would resume from the live run's checkpoint and write into its MLflow run, so
    it is refused; a claim whose training died is taken over (the rerun resumes)."""
    from components.common.claim import OutputBusy, acquire

    try:
        claim = acquire(checkpoint_dir)
    except OutputBusy as busy:
        raise OutputBusy(
            f"a training with this config and dataset is already running: {busy} To train a "
            "separate copy, pass another --checkpoint-dir."
        ) from None
    try:
        yield
    finally:
        claim.release()  # the finished training already removed the folder, claim included


def worker_command(config_file: Path, result_file: Path, workers: int) -> list[str]:
    """The command line that runs the workers: plain python for 1, horovodrun for N."""
    worker = [sys.executable, "-m", "components.train.worker"]
    worker += ["--config", str(config_file), "--result", str(result_file)]
    if workers == 1:
        return worker
    horovodrun = str(Path(sys.executable).parent / "horovodrun")
    # Horovod: Gloo over loopback needs no MPI and no ssh for workers on this host.
    return [horovodrun, "-np", str(workers), "-H", f"localhost:{workers}", "--gloo", *worker]


def train(config: TrainConfig, tracking_uri: str | None = None) -> TrainResult:
    """Run a whole training and return its MLflow run and registered model.

    Rerunning the same command after a crash resumes from the last epoch's checkpoint.
    """
    manifest = preflight(config)
    if not config.checkpoint_dir:
        key = config.checkpoint_key(manifest.dataset_hash)
        config = dataclasses.replace(
            config, checkpoint_dir=str(gallerytag_home() / "checkpoints" / key)
        )
    check_writable(config.checkpoint_dir)
    with (
        training_claim(config.checkpoint_dir),
        tracking(tracking_uri),
        tempfile.TemporaryDirectory(prefix="gallerytag-train-") as tmp,
    ):
        config_file = Path(tmp, "config.json")
        result_file = Path(tmp, "result.json")
        config_file.write_text(config.to_json())
        command = worker_command(config_file, result_file, config.workers)
        code = progress.relay(command, progress.Progress("train", "images"))
        if code != 0 or not result_file.exists():
            raise RuntimeError(
                f"training workers failed (exit code {code}); the first error in their "
                "output above names the cause"
            )
        return TrainResult(**json.loads(result_file.read_text()))
