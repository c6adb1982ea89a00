"""Which runtime runs the tagger's forward pass: Keras, or the same network as OpenVINO IR.

`auto` picks OpenVINO on CPU (measured about 2x Keras's images/s on this network, at max |dp|
below 1e-6) when the IR loads, and Keras otherwise (a visible GPU, OpenVINO missing, an IR
that fails to load or to match Keras). A version logged without an IR is exported once per
job, into the job's temporary folder, and checked against Keras before use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

# The IR lookup and export live in common: evaluate scores a model through the same path.
from components.common.tagger_ir import (
    RuntimeUnavailable,
    inference_precision,
    openvino_ir_for,
)
from components.common.tracking import TaggerSpec

log = logging.getLogger(__name__)
RUNTIMES = ("auto", "keras", "openvino")
PRECISIONS = ("f32", "bf16")


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a tagging job uses, the file its workers load, and why it was chosen."""

    name: str  # "keras" or "openvino"
    precision: str  # "f32", or "bf16" (OpenVINO only, asked for explicitly)
    model_file: str  # the .keras file, or the IR's model.xml (model.bin beside it)
    reason: str

    @property
    def label(self) -> str:
        """The name outputs record: keras, openvino, or openvino-bf16 for reduced precision."""
        return self.name if self.precision == "f32" else f"{self.name}-{self.precision}"

    def describe(self) -> str:
        """One line for the user: which runtime, which precision, why."""
        return f"runtime: {self.name} ({self.precision}): {self.reason}"


def gpu_visible() -> bool:
    """Whether Keras would run on a GPU here (then OpenVINO's CPU plugin is not the faster
    path). TensorFlow is imported only where an NVIDIA device exists: the check must not cost
    a CPU-only launcher TF's import time and memory."""
    import glob
    import os

    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1")
    if hidden or not glob.glob("/dev/nvidia[0-9]*"):
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def choose_runtime(
    tagger: TaggerSpec, requested: str = "auto", precision: str = "f32", cache_dir: str = ""
) -> RuntimeChoice:
    """Resolve `requested` (auto, keras, openvino) for `tagger`; an IR missing from the model
    version is exported into `cache_dir` (once: a second call reuses it)."""
    if requested not in RUNTIMES:
        raise ValueError(f"runtime {requested!r} is not one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "f32" and requested == "keras":
        raise ValueError(f"--precision {precision} runs on OpenVINO only: use --runtime openvino")
    if requested == "keras":
        return RuntimeChoice("keras", "f32", tagger.model_file, "asked for")
    if requested == "auto" and gpu_visible():
        if precision != "f32":
            raise ValueError(
                f"--precision {precision} runs on OpenVINO's CPU plugin, but a GPU is "
                "visible: use --runtime openvino to tag on the CPU anyway"
            )
        return RuntimeChoice("keras", "f32", tagger.model_file, "a GPU is visible")
    try:
        ir_file, origin = openvino_ir_for(tagger, cache_dir)
    except RuntimeUnavailable as error:
        if requested == "openvino" or precision != "f32":
            raise
        log.warning("%s", error)
        return RuntimeChoice("keras", "f32", tagger.model_file, f"OpenVINO unavailable ({error})")
    why = "asked for" if requested == "openvino" else "fastest exact runtime on CPU"
    if precision != "f32":
        why += f"; reduced precision {precision} asked for: scores may differ from Keras"
        ran = inference_precision(ir_file, precision)
        if ran != precision:  # workers on this machine's CPU would quietly run f32
            why += f" (but this CPU has no {precision} support: OpenVINO runs {ran} here)"
    return RuntimeChoice("openvino", precision, ir_file, f"{why}; IR {origin}")
