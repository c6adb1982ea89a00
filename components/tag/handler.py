"""Beam RunInference model handler for Keras 3 taggers (Beam's TF handler needs tf-keras)."""

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
        probabilities = np.asarray(model.predict_on_batch(stacked))
        for inference in probabilities:
            # The pixels are not needed downstream; dropping them keeps the output small.
            yield PredictionResult(example=None, inference=inference)

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        """Size of the batch's pixels (the default pickles the whole batch to measure it)."""
        return sum(example.nbytes for example in batch)
