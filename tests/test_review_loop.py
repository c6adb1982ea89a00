"""The loop closes: wrong labels planted in a training gallery are found by `evaluate`'s
suspects, decided through the review page's HTTP API, fed back with `ingest --corrections`,
and the retrained model is more accurate on the same clean test images.

The source is a manifest with a fixed split column, so both datasets share the very same
clean test images and only the training labels differ. The planted noise is large (40% of
each class's training images carry one of the two wrong labels): large enough to cost the
first model accuracy, spread over two wrong labels so an image's neighbours still mostly
carry its true label (which is how suspects are found).
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from components.common import corrections
from components.evaluate.run import EvaluateConfig, evaluate
from components.evaluate.suspects import SuspectConfig
from components.ingest.core import IngestConfig
from components.ingest.pipeline import run as ingest
from components.review.app import create_app
from components.review.log import CorrectionsLog
from components.review.queue import load_queue
from components.review.session import ReviewSession
from components.train.config import TrainConfig
from components.train.launcher import train
from tests.conftest import jpeg_bytes, pattern_image

pytestmark = pytest.mark.slow
LABELS = ("horizontal", "vertical", "square")
TRAIN_PER_CLASS, VALIDATION_PER_CLASS, TEST_PER_CLASS = 40, 6, 60
NOISE = 0.4
# The patterns faded toward grey under pixel noise: hard enough that the labels matter (on the
# plain patterns both models score 1.0, the noise does not hurt), easy enough to learn.
CONTRAST, PIXEL_NOISE = 0.12, 40.0
IN_MEMORY = ["--direct_running_mode=in_memory"]
WRITE = {"X-Gallerytag-Review": "1"}


def faint_pattern(kind: int, seed: int) -> np.ndarray:
    """conftest's pattern image with its contrast cut to CONTRAST, under Gaussian noise."""
    rng = np.random.default_rng(seed)
    pixels = 128 + (pattern_image(kind, seed).astype(float) - 128) * CONTRAST
    return np.clip(pixels + rng.normal(0, PIXEL_NOISE, pixels.shape), 0, 255).astype(np.uint8)


def write_gallery(root: Path) -> tuple[Path, dict[str, str], set[str]]:
    """Images, the manifest (with planted wrong training labels), the truth per uri and the
    uris whose label was planted wrong."""
    rng = np.random.default_rng(7)
    truth, planted, rows = {}, set(), []
    for kind, label in enumerate(LABELS):
        wrong = [other for other in LABELS if other != label]
        flipped = int(NOISE * TRAIN_PER_CLASS)
        for index in range(TRAIN_PER_CLASS + VALIDATION_PER_CLASS + TEST_PER_CLASS):
            path = root / "images" / f"{label}_{index:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg_bytes(faint_pattern(kind, seed=10_000 * kind + index)))
            split = (
                "train"
                if index < TRAIN_PER_CLASS
                else "validation"
                if index < TRAIN_PER_CLASS + VALIDATION_PER_CLASS
                else "test"
            )
            given = label
            if index < flipped:  # alternate between the two wrong labels
                given = wrong[index % 2]
                planted.add(str(path))
            truth[str(path)] = label
            rows.append((str(path), given, split))
    order = rng.permutation(len(rows))
    manifest = root / "gallery.csv"
    with manifest.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["uri", "label", "split"])
        writer.writerows(rows[i] for i in order)
    return manifest, truth, planted


def train_and_test(dataset: str, name: str, root: Path, mlflow_server: str) -> tuple[float, str]:
    """Train the same small recipe on a dataset; return its test top-1 and evaluation dir.
    Suspects are searched with a lower confidence bar than the default 0.8: with 40% of a
    class mislabelled, a model that has learnt the class is right but only ~0.6 sure (and a
    false alarm costs the reviewer one keystroke, a missed label stays wrong)."""
    # The recipe is pinned here, not taken from TrainConfig's defaults: the test is about
    # what review does to the labels, so both trainings must be the same short, cheap run
    # (a randomly initialised head for three epochs on the frozen backbone, no fine-tuning).
    config = TrainConfig(
        data=dataset,
        workers=1,
        batch_size=16,
        head_init="random",
        head_epochs=3,
        finetune_blocks=0,
        label_smoothing=0.0,
        learning_rate=3e-3,
        schedule="cosine",
        warmup_epochs=1.0,
        dropout=0.2,
        augment=False,
        experiment=name,
        registered_model=name,
        checkpoint_dir=str(root / f"checkpoints-{Path(dataset).name}"),
    )
    result = train(config, mlflow_server)
    out = str(root / f"evaluation-{Path(dataset).name}")
    suspects = SuspectConfig(min_confidence=0.4, neighbours=10, max_own_label_share=0.35)
    evaluation = evaluate(
        f"models:/{result.registered_model}/{result.version}",
        dataset,
        out,
        EvaluateConfig(suspects=suspects),
    )
    return evaluation.top1, out


def review_suspects(folder: str, truth: dict[str, str]) -> int:
    """A reviewer who knows the truth decides every suspect through the page's HTTP API."""
    queue = load_queue(folder)
    session = ReviewSession(queue, CorrectionsLog(queue.corrections_path), "oracle")
    client = TestClient(create_app(session), base_url="http://127.0.0.1")
    page = client.get("/api/queue").json()
    for item in page["items"]:
        label = truth[queue.by_id[item["id"]].uri]
        body = {"id": item["id"], "decision": "accept"}
        if label != item["top1"]:
            body = {"id": item["id"], "decision": "label", "label": label}
        assert client.post("/api/decide", json=body, headers=WRITE).status_code == 200
    return len(page["items"])


def test_reviewed_suspects_make_a_better_model(
    tmp_path: Path, mlflow_server: str, tracking_env: str
) -> None:
    """Planted noise -> suspects -> review -> ingest --corrections -> higher test top-1."""
    manifest, truth, planted = write_gallery(tmp_path)
    name = f"loop-{uuid.uuid4().hex[:8]}"
    config = IngestConfig(image_size=64, near_duplicate_distance=-1)
    first = str(tmp_path / "dataset-1")
    ingest(str(manifest), first, config, IN_MEMORY)
    first_top1, evaluation = train_and_test(first, name, tmp_path, mlflow_server)

    reviewed = review_suspects(evaluation, truth)
    rows = corrections.read_rows(str(Path(evaluation) / "corrections.jsonl"))
    fixed = {row["uri"] for row in rows if row["label"] != row["given_label"]}
    print(f"first top1 {first_top1:.3f}; suspects {reviewed}, planted {len(planted)}, "
          f"fixed {len(fixed & planted)}, false alarms {len(fixed - planted)}")  # fmt: skip
    assert len(fixed & planted) >= len(planted) // 2, "review found too few planted labels"

    second = str(tmp_path / "dataset-2")
    summary = ingest(
        str(manifest), second, config, IN_MEMORY, [str(Path(evaluation) / "corrections.jsonl")]
    )
    assert summary.review["from_review"] == reviewed
    second_top1, _ = train_and_test(second, name, tmp_path, mlflow_server)
    print(f"second top1 {second_top1:.3f}")
    manifest_json = json.loads((Path(second) / "manifest.json").read_text())
    assert manifest_json["review"]["changed"] == len(fixed)
    # Not luck: the retrained model is above the top of the first one's 95% interval.
    first_interval = json.loads((Path(evaluation) / "evaluation.json").read_text())["top1"]
    assert second_top1 > first_interval["high"] > first_top1, (second_top1, first_interval)
