"""A `models:/NAME@ALIAS` tagger is resolved to one version once: rows carry the version whose
weights tagged them even when the alias moves while the model is being downloaded."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import jpeg_bytes
from tests.test_evaluate import SIZE, register

LABELS = ["dark", "bright"]


def register_constant_tagger(name: str, label: str) -> str:
    """Register a real Keras tagger that calls every image `label`; returns its version."""
    import keras

    bias = [6.0, -6.0] if label == "dark" else [-6.0, 6.0]
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    scores = keras.layers.Dense(
        2, "softmax", kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(bias)
    )(pooled)
    return register(keras.Model(inputs, scores), name, LABELS).rsplit("/", 1)[-1]


def test_rows_carry_the_version_whose_weights_tagged_them(
    tracking_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """@champion moves from v1 (all dark) to v2 (all bright) right after the download of the
    champion's files: every row was made by v1's weights, so every row must say version 1."""
    import mlflow

    from components.common.tracking import fetch_tagger
    from components.tag.pipeline import run as tag

    name = f"alias-race-{uuid.uuid4().hex[:8]}"
    first = register_constant_tagger(name, "dark")
    second = register_constant_tagger(name, "bright")
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, "champion", first)

    real_download = mlflow.artifacts.download_artifacts
    promoted = []

    def download_then_promote(*args, **kwargs):
        """The real download, then a promotion by someone else before the caller goes on."""
        local = real_download(*args, **kwargs)
        client.set_registered_model_alias(name, "champion", second)
        promoted.append(kwargs.get("artifact_uri", args[0] if args else None))
        return local

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download_then_promote)
    tagger = fetch_tagger(f"models:/{name}@champion", str(tmp_path / "model"))
    assert promoted, "the download step was not reached"
    assert client.get_model_version_by_alias(name, "champion").version == second

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index in range(4):
        pixels = np.full((SIZE, SIZE, 3), 40 * index, np.uint8)
        (inbox / f"img_{index}.jpg").write_bytes(jpeg_bytes(pixels))
    out = tmp_path / "tags"
    summary = tag(str(inbox), str(out), tagger, beam_args=["--direct_running_mode=in_memory"])
    rows = [json.loads(line) for shard in out.glob("tags-*.jsonl") for line in shard.open()]
    assert summary.seen == len(rows) == 4
    assert {row["top1"] for row in rows} == {"dark"}  # v1's weights did the tagging
    assert {row["model_version"] for row in rows} == {first}
    assert client.get_model_version(name, first).run_id == tagger.run_id
