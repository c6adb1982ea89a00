"""The tagger as an MLflow pyfunc model: images in, label / score / top-k / status out.

This is the `python_function` flavour's loader of every registered gallerytag model, so
`mlflow models serve -m models:/NAME@champion`, `mlflow.pyfunc.load_model` and any MLflow
deployment target tag images exactly as `gallerytag tag` does: the same decoding and
resizing (`components/common/images.py`) and the same auto/review policy
(`components/tag/policy.py`, with the `policy.json` of the model's evaluation when
`gallerytag evaluate` attached one to the model). The module and what it imports are
copied into the model's `code/` folder when it is logged, so it needs no gallerytag install.

Input: a DataFrame with one row per image and a column `image` (JPEG/PNG/... bytes, or the
same as a base64 string; over REST always base64) or `uri` (read through
components/common/storage.py; only under the prefixes listed in GALLERYTAG_SERVING_URIS,
comma-separated, since a server must not read whatever path a caller names).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from components.common import storage
from components.common.images import ImageRejected, content_hash, load_for_model
from components.common.policy_file import POLICY_FILE
from components.tag.policy import TagPolicy, policy_from_file, tag_row, unevaluated_policy

URI_PREFIXES_ENV = "GALLERYTAG_SERVING_URIS"
OUTPUT_COLUMNS = ["label", "score", "top_k", "margin", "status", "reason", "content_hash"]


class ImageTagger:
    """A loaded tagger: Keras model, label map, preprocessing and policy."""

    def __init__(self, model_dir: Path, data_dir: Path) -> None:
        import keras
        from mlflow.models import Model

        meta = (Model.load(str(model_dir / "MLmodel")).metadata or {})["gallerytag"]
        self.labels: list[str] = list(meta["labels"])
        self.image_size = int(meta["image_size"])
        self.resize_mode = meta["resize_mode"]
        self.multi_label = bool(meta["multi_label"])
        self.model = keras.saving.load_model(str(data_dir / "model.keras"))
        policy_file = data_dir / POLICY_FILE
        # Attached by `gallerytag evaluate`; without it nothing is trusted (as `tag` does).
        self.policy: TagPolicy = (
            policy_from_file(json.loads(policy_file.read_text()))
            if policy_file.exists()
            else unevaluated_policy()
        )
        self.uri_prefixes = [p for p in os.environ.get(URI_PREFIXES_ENV, "").split(",") if p]

    def _read(self, row: pd.Series) -> tuple[str, bytes]:
        """(uri or "", image bytes) of one input row; ImageRejected says what is wrong."""
        image = row.get("image")
        uri = row.get("uri")
        if isinstance(image, bytes | bytearray):
            return "", bytes(image)
        if isinstance(image, str) and image:
            try:
                return "", base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError):
                raise ImageRejected("bad_base64", "`image` is neither bytes nor base64") from None
        if isinstance(uri, str) and uri:
            if not any(storage.is_within(prefix, uri) for prefix in self.uri_prefixes):
                raise ImageRejected(
                    "uri_not_allowed",
                    f"{uri} is not under a prefix in {URI_PREFIXES_ENV} (the server's "
                    "environment); send the image bytes, or set it",
                )
            try:
                return uri, storage.read_bytes(uri)
            except OSError as error:
                raise ImageRejected("unreadable_file", f"{uri}: {error}") from None
        raise ImageRejected("no_image", "each row needs an `image` (bytes/base64) or a `uri`")

    def predict(self, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """One output row per input row, in order; undecodable inputs get status rejected."""
        top_k = int((params or {}).get("top_k") or self.policy.top_k)
        policy = dataclasses.replace(self.policy, top_k=max(1, min(top_k, len(self.labels))))
        rows: list[dict] = [{}] * len(frame)
        pixels, waiting = [], []
        for index, (_, row) in enumerate(frame.iterrows()):
            try:
                uri, data = self._read(row)
                array = load_for_model(data, self.image_size, self.resize_mode)
            except ImageRejected as error:
                rows[index] = _rejected(error)
                continue
            pixels.append(array)
            waiting.append((index, uri, content_hash(data)))
        if pixels:
            batch = np.stack(pixels).astype(np.float32)
            probabilities = np.asarray(self.model.predict_on_batch(batch))
            for (index, uri, digest), probs in zip(waiting, probabilities, strict=True):
                tag = tag_row(uri, digest, probs, self.labels, policy, "", None, self.multi_label)
                rows[index] = {
                    "label": tag["top1"],
                    "score": tag["score"],
                    "top_k": tag["labels"],
                    "margin": tag["margin"],
                    "status": tag["status"],
                    "reason": tag.get("reason"),
                    "content_hash": digest,
                }
        frame = pd.DataFrame(rows, columns=OUTPUT_COLUMNS, dtype=object)
        return frame.where(frame.notna(), None)  # JSON null, not NaN, for rejected rows


def _rejected(error: ImageRejected) -> dict:
    return {
        "label": None,
        "score": None,
        "top_k": [],
        "margin": None,
        "status": "rejected",
        "reason": f"{error.reason}: {error.detail}" if error.detail else error.reason,
        "content_hash": None,
    }


def _load_pyfunc(data_path: str) -> ImageTagger:
    """MLflow's entry point for the python_function flavour (data_path = the model's data/)."""
    data_dir = Path(data_path)
    return ImageTagger(data_dir.parent, data_dir)
