"""Shared fixtures: a real GCS emulator (tests/gcs_emulator.py), a real MLflow server, images."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

from components.evaluate.config import GateConfig

pytest_plugins = ["tests.gcs_emulator"]

# Tests of the chain (ingest -> train -> evaluate -> gate -> alias) train one fine-tuning
# epoch on a dozen test images, which beats its own probe or not by one image (CI saw 11/12
# against 12/12), so they turn the first-model probe rule off; the decision still records
# the probe, and tests/test_evaluate_metrics.py tests the rule itself.
CHAIN_GATE = GateConfig(beat_probe=False)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend) on loopback for the whole session."""
    from components.common.tracking import LocalStore, local_server

    home = tmp_path_factory.mktemp("mlflow-home")
    with local_server(LocalStore(home)) as uri:
        yield uri


@pytest.fixture
def tracking_env(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow (and child processes) at the session's server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    return mlflow_server


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where browser tests put their screenshots: a temporary folder, or the folder named by
    GALLERYTAG_SCREENSHOTS (`make screenshots` sets docs/images), so a test run never
    rewrites tracked files."""
    folder = Path(os.environ.get("GALLERYTAG_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB array as JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def pattern_image(kind: int, seed: int, size: int = 64) -> np.ndarray:
    """A synthetic photo whose class is visible: kind 0 = horizontal stripes, 1 = vertical,
    2 = bright centre square; noise and offsets make every image different."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8)
    period = int(rng.integers(6, 12))
    offset = int(rng.integers(0, period))
    if kind == 0:
        rows = ((np.arange(size) + offset) // (period // 2)) % 2 == 0
        image[rows, :, :] = 220
    elif kind == 1:
        cols = ((np.arange(size) + offset) // (period // 2)) % 2 == 0
        image[:, cols, :] = 220
    else:
        low, high = size // 4 + offset % 4, 3 * size // 4 - offset % 4
        image[low:high, low:high, :] = 230
    return image


def write_pattern_gallery(root: Path, per_class: int, labels: tuple[str, ...]) -> Path:
    """A folder-per-class gallery of distinct synthetic JPEGs."""
    for kind, label in enumerate(labels):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = pattern_image(kind, seed=1000 * kind + index)
            (folder / f"{label}_{index:03d}.jpg").write_bytes(jpeg_bytes(pixels))
    return root


def write_broken_files(folder: Path) -> dict[str, str]:
    """The bad-input trio of the foundation issue; returns file name -> expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = jpeg_bytes(pattern_image(0, seed=999))
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo at all\n")
    return {"truncated.jpg": "truncated", "empty.jpg": "empty_file", "notes.jpg": "not_an_image"}


def save_mlflow_tagger(path: Path, labels: list[str], size: int = 32) -> Path:
    """A tiny real Keras tagger saved as a local MLflow model directory (what `--model`
    takes besides models:/ URIs), with gallerytag metadata naming `labels`."""
    import keras
    import mlflow.keras
    from mlflow.models import infer_signature

    from components.common.tracking import model_metadata

    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(len(labels), activation="softmax")(pooled))
    probe = np.zeros((1, size, size, 3), np.float32)
    mlflow.keras.save_model(
        model,
        str(path),
        signature=infer_signature(probe, model.predict_on_batch(probe)),
        pip_requirements=["keras"],
        metadata=model_metadata(labels, size, "pad", multi_label=False, backbone="none"),
    )
    return path
