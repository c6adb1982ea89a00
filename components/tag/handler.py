"""Beam RunInference model handlers: Keras 3 (Beam's TF handler needs tf-keras) and the same
tagger as OpenVINO IR (components/tag/runtime.py picks one)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult


class KerasImageHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """Loads a `.keras` tagger once per worker process and predicts stacked image batches."""

    def __init__(
        self,
        model_file: str,
        min_batch_size: int = 8,
        max_batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.model_file = model_file
        self.threads = threads  # TF intra-op threads in this worker; None = TF's default

    def load_model(self) -> Any:
        """Load the Keras model from local disk or any storage URL."""
        import keras
        import tensorflow as tf

        if self.threads:
            # RuntimeError: TF already runs in this process (in-memory runner); keep its pools.
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_intra_op_parallelism_threads(self.threads)

        from components.common import storage

        local = storage.local_copy(self.model_file)
        return keras.saving.load_model(local)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """Predict one batch of HxWx3 uint8 images; yields one result per image."""
        stacked = np.stack(batch).astype(np.float32)
        probabilities = self.predict(model, stacked)
        for inference in probabilities:
            # The pixels are not needed downstream; dropping them keeps the output small.
            yield PredictionResult(example=None, inference=inference)

    def predict(self, model: Any, batch: np.ndarray) -> np.ndarray:
        """Probabilities for one float32 batch."""
        return np.asarray(model.predict_on_batch(batch))

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        """Size of the batch's pixels (the default pickles the whole batch to measure it)."""
        return sum(example.nbytes for example in batch)


class OpenVINOImageHandler(KerasImageHandler):
    """Loads a tagger's OpenVINO IR (model.xml + model.bin) once per worker process and
    predicts stacked image batches on the CPU plugin, as KerasImageHandler does with Keras."""

    def __init__(self, model_file: str, *, precision: str = "f32", **options: Any) -> None:
        super().__init__(model_file, **options)  # batch sizes and threads as for Keras
        self.precision = precision  # f32 matches Keras; bf16 only when asked for

    def load_model(self) -> Any:
        """Compile the IR from local disk or any storage URL (weights: the .bin beside it)."""
        import os

        from components.common import storage
        from models.openvino_ir import CompiledTagger

        local = storage.local_copy(self.model_file)
        weights = self.model_file[: -len(".xml")] + ".bin"
        local_weights = os.path.splitext(local)[0] + ".bin"
        if not os.path.exists(local_weights):  # a download: fetch the weights beside it
            storage.copy(weights, local_weights)
        return CompiledTagger(local, threads=self.threads, precision=self.precision)

    def predict(self, model: Any, batch: np.ndarray) -> np.ndarray:
        """Probabilities for one float32 batch, spread over the plugin's streams."""
        return model.predict(batch)
