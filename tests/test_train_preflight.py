"""Bad training requests fail in seconds, before any worker starts, with the fix named."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from components.common import dataset
from components.common.tracking import TrackingUnavailable
from components.ingest.core import IngestConfig
from components.ingest.pipeline import run as ingest
from components.train.config import TrainConfig
from components.train.launcher import preflight, train
from tests.conftest import write_pattern_gallery


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real ingested dataset of 3 labels x 10 images."""
    root = tmp_path_factory.mktemp("preflight")
    gallery = write_pattern_gallery(root / "gallery", 10, ("a", "b", "c"))
    out = str(root / "dataset")
    ingest(str(gallery), out, IngestConfig(image_size=32), ["--direct_running_mode=in_memory"])
    return out


def test_unknown_backbone_lists_the_known_ones(small_dataset: str) -> None:
    """A typo in --backbone names the valid choices."""
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        preflight(TrainConfig(data=small_dataset, backbone="resnet9000"))


def test_missing_dataset(tmp_path: Path) -> None:
    """A folder that is not an ingested dataset says how to make one."""
    with pytest.raises(dataset.DatasetError, match="gallerytag ingest"):
        preflight(TrainConfig(data=str(tmp_path / "nothing")))
    with pytest.raises(ValueError, match="--data"):
        preflight(TrainConfig(data=""))


def test_empty_training_split(small_dataset: str, tmp_path: Path) -> None:
    """A dataset whose train split is empty is refused."""
    copy = tmp_path / "copy"
    copy.mkdir()
    manifest = json.loads(Path(small_dataset, "manifest.json").read_text())
    manifest["counts"]["train"] = {}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(dataset.DatasetError, match="no training images"):
        preflight(TrainConfig(data=str(copy)))


def test_label_map_mismatch_between_shards_and_manifest(small_dataset: str, tmp_path: Path):
    """Shards holding label ids the manifest does not know are caught before training: a
    genuine 2-label manifest (its dataset hash checks out) over another ingest's 3-label
    shards. (An edited label list is caught earlier, by the dataset hash.)"""
    two = str(tmp_path / "two-labels")
    gallery = write_pattern_gallery(tmp_path / "gallery2", 10, ("a", "b"))
    ingest(str(gallery), two, IngestConfig(image_size=32), ["--direct_running_mode=in_memory"])
    manifest = dataset.read_manifest(two)
    three = dataset.read_manifest(small_dataset)
    for split in ("train", "validation", "test"):
        for ours, theirs in zip(manifest.shards[split], three.shards[split], strict=False):
            Path(two, ours).write_bytes(Path(small_dataset, theirs).read_bytes())
    with pytest.raises(dataset.DatasetError, match="different ingests"):
        preflight(TrainConfig(data=two))
    edited = json.loads(Path(two, "manifest.json").read_text())
    edited["labels"] = ["b", "a"]
    Path(two, "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(dataset.DatasetError, match="does not match its dataset_hash"):
        preflight(TrainConfig(data=two))


def test_unwritable_checkpoint_dir(small_dataset: str, tmp_path: Path) -> None:
    """Checkpoints that cannot be written fail the command before training."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = TrainConfig(data=small_dataset, checkpoint_dir=str(blocker / "ckpt"))
    with pytest.raises(OSError, match="cannot write checkpoints"):
        train(config, tracking_uri="http://127.0.0.1:9")


def test_unreachable_mlflow_fails_fast(small_dataset: str, tmp_path: Path) -> None:
    """A dead tracking server is reported within seconds, before any worker starts."""
    config = dataclasses.replace(
        TrainConfig(data=small_dataset), checkpoint_dir=str(tmp_path / "ckpt")
    )
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="not reachable"):
        train(config, tracking_uri="http://127.0.0.1:9")
    assert time.monotonic() - started < 20
