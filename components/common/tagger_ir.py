"""The OpenVINO IR of a tagger, as both `tag` and `evaluate` run it: the IR logged with the
model version when it was made from this very `.keras` file, else one exported once per job
and checked against Keras before use (models/openvino_ir.py exports and compiles it)."""

from __future__ import annotations

import logging
from pathlib import Path

from components.common.tracking import TaggerSpec

log = logging.getLogger(__name__)


class RuntimeUnavailable(RuntimeError):
    """The requested runtime cannot run this tagger here."""


def openvino_ir_for(tagger: TaggerSpec, cache_dir: str) -> tuple[str, str]:
    """(model.xml, where it came from) for `tagger`: the IR logged with its version when it
    was made from this very .keras file, else a fresh export under `cache_dir` that has
    passed the parity check."""
    try:
        from models import openvino_ir
    except ImportError as error:
        raise RuntimeUnavailable(f"openvino is not installed: {error}") from None
    digest = openvino_ir.file_sha256(tagger.model_file)
    if tagger.openvino_model:
        logged = openvino_ir.read_spec(tagger.openvino_model).get("keras_sha256")
        if logged == digest:
            _check_loads(tagger.openvino_model)
            return tagger.openvino_model, "logged with the model version"
        log.warning("the IR logged with %s was made from another .keras file: exporting again",
                    tagger.uri)  # fmt: skip
    if not cache_dir:
        raise RuntimeUnavailable(f"{tagger.uri} has no OpenVINO IR and no folder to export to")
    target = Path(cache_dir) / f"openvino-{digest[:16]}"
    ir_file = target / openvino_ir.IR_NAME
    if ir_file.exists() and openvino_ir.read_spec(ir_file).get("keras_sha256") == digest:
        return str(ir_file), f"exported earlier in this job ({target})"
    import keras

    model = keras.saving.load_model(tagger.model_file)
    spec = {
        "labels": list(tagger.labels),
        "image_size": tagger.image_size,
        "resize_mode": tagger.resize_mode,
        "multi_label": tagger.multi_label,
        "keras_sha256": digest,
    }
    try:
        openvino_ir.export_openvino(model, target, spec)
        compiled = openvino_ir.CompiledTagger(str(ir_file))
    except Exception as error:
        raise RuntimeUnavailable(f"cannot export {tagger.uri} to OpenVINO: {error}") from None
    probe = openvino_ir.parity_probe(tagger.image_size)
    difference = openvino_ir.max_difference(model, compiled, probe)
    if difference > openvino_ir.PARITY_TOLERANCE:
        raise RuntimeUnavailable(
            f"the OpenVINO export of {tagger.uri} differs from Keras by {difference:.2g} "
            f"(> {openvino_ir.PARITY_TOLERANCE}); use --runtime keras"
        )
    return str(ir_file), (
        f"exported on the fly (the version has none), f32 max |dp| vs Keras {difference:.1g}"
    )


def inference_precision(ir_file: str, precision: str) -> str:
    """The precision OpenVINO's CPU plugin really runs `ir_file` in here when asked for
    `precision`: f32 on a CPU that cannot do bf16 (it falls back without an error)."""
    from models.openvino_ir import CompiledTagger

    return CompiledTagger(ir_file, threads=1, precision=precision).inference_precision


def _check_loads(ir_file: str) -> None:
    """Compile the IR once here, so a broken artifact fails before any Beam work."""
    from models import openvino_ir

    try:
        openvino_ir.CompiledTagger(ir_file, threads=1)
    except Exception as error:
        raise RuntimeUnavailable(f"the OpenVINO IR {ir_file} does not load: {error}") from None
