"""OpenVINO IR of a Keras tagger: export it, and run it (the same network, faster on CPU).

Keras model -> TF SavedModel (`model.export`) -> `openvino.convert_model` -> `model.xml` +
`model.bin` in f32 (never the fp16 weights `openvino.save_model` writes by default), beside a
`gallerytag.json` that carries the label map, the preprocessing spec and the SHA-256 of the
`.keras` file it was made from, so an IR can always be checked against its model.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from pathlib import Path

import keras
import numpy as np

IR_NAME = "model.xml"
SPEC_NAME = "gallerytag.json"
SPEC_SCHEMA_VERSION = 1
PRECISIONS = ("f32", "bf16")
# Exact parity is the rule for the f32 path: what Keras and the IR may differ by (measured on
# Lite0 at 224 px: 7e-7).
PARITY_TOLERANCE = 1e-4


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in chunks (a model file is tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_openvino(model: keras.Model, out_dir: str | Path, spec: dict) -> Path:
    """Write `model` as f32 OpenVINO IR into `out_dir` with `spec` (labels, image size, resize
    mode, `keras_sha256`, ...) as gallerytag.json; returns the path of model.xml."""
    import openvino as ov

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gallerytag-savedmodel-") as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        converted = ov.convert_model(saved)
        # compress_to_fp16 defaults to True: it would round every weight, and parity with
        # Keras (max |dp| <= 1e-4) is the point of this artifact.
        ov.save_model(converted, str(out / IR_NAME), compress_to_fp16=False)
    record = {
        **spec,
        "schema_version": SPEC_SCHEMA_VERSION,
        "runtime": "openvino",
        "openvino_version": ov.__version__,
        "weights_precision": "f32",
    }
    (out / SPEC_NAME).write_text(json.dumps(record, indent=2, sort_keys=True))
    return out / IR_NAME


def read_spec(ir_file: str | Path) -> dict:
    """The gallerytag.json beside an IR's model.xml (empty when there is none)."""
    path = Path(ir_file).parent / SPEC_NAME
    return json.loads(path.read_text()) if path.exists() else {}


class CompiledTagger:
    """An IR compiled for the CPU; `predict` splits a batch over the plugin's parallel
    streams (PERFORMANCE_HINT=THROUGHPUT), which a single synchronous request would leave idle."""

    def __init__(self, ir_file: str, threads: int | None = None, precision: str = "f32") -> None:
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        config = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": precision,
            # The plugin pins its threads to cores, chosen without regard to other processes:
            # Beam's one-per-core workers then all ran on the same core (measured: two
            # 1-thread workers 77.5 images/s pinned, 155.5 not; docs/benchmarks.md).
            "ENABLE_CPU_PINNING": False,
        }
        if threads:
            # Beam's local workers run one per core: each must not start a machine-wide pool.
            config["INFERENCE_NUM_THREADS"] = threads
        weights = str(Path(ir_file).with_suffix(".bin"))
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(ir_file, weights), "CPU", config)
        self.precision = precision
        # What the plugin really runs: asked for bf16 on a CPU it cannot do bf16 on (x86
        # without AVX-512) it keeps f32 instead of failing, so the request alone proves nothing.
        self.inference_precision = str(
            self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        )
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._queue = ov.AsyncInferQueue(self.compiled, self.requests)
        results: dict[int, np.ndarray] = {}
        # A closure over the dict, not a bound method: no cycle through the queue, so the
        # compiled model and its threads go when the last reference does.
        self._queue.set_callback(
            lambda request, index: results.__setitem__(
                index, request.get_output_tensor(0).data.copy()
            )
        )
        self._results = results
        self._lock = threading.Lock()  # one queue: a runner's threads take turns on it

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a float32 (N, size, size, 3) batch of 0..255 pixels."""
        parts = np.array_split(batch, min(self.requests, len(batch)))
        with self._lock:
            self._results.clear()
            for index, part in enumerate(parts):
                self._queue.start_async([np.ascontiguousarray(part)], index)
            self._queue.wait_all()
            return np.concatenate([self._results[index] for index in range(len(parts))])


def max_difference(model: keras.Model, compiled: CompiledTagger, batch: np.ndarray) -> float:
    """max |probability difference| between Keras and the compiled IR on one batch."""
    expected = np.asarray(model.predict_on_batch(batch))
    return float(np.max(np.abs(compiled.predict(batch) - expected)))


def parity_probe(image_size: int, count: int = 4, seed: int = 0) -> np.ndarray:
    """A fixed batch of random pixels to check an export against its Keras model."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, image_size, image_size, 3)).astype(np.float32)
