"""Log a tagger as one MLflow model with two flavours: `keras` (what train, evaluate and
tag load) and a `python_function` flavour that takes images and returns named outputs
(label, score, top_k, margin, status, reason, content_hash), so `mlflow models serve` and
any MLflow deployment target answer with label names instead of bare probabilities.

The pyfunc loader is `components.tag.serving` (the tagging component's own policy and
preprocessing). It is named here, not imported: its source files are copied into the
model's `code/` folder, which MLflow puts on sys.path when it loads the model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

LOADER_MODULE = "components.tag.serving"
POLICY_IN_MODEL = "data"  # folder of the model's artifacts where policy.json is attached
# The loader and everything it imports (relative to the repository root).
BUNDLED_SOURCES = (
    "components/__init__.py",
    "components/common/__init__.py",
    "components/common/images.py",
    "components/common/policy_file.py",
    "components/common/storage.py",
    "components/common/tag_rows.py",
    "components/tag/__init__.py",
    "components/tag/policy.py",
    "components/tag/serving.py",
)
ROOT = Path(__file__).resolve().parents[2]


def serving_signature():
    """Images in (bytes/base64 or a URI per row), named outputs out, `top_k` as a param."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array, Object, Property

    scored = Object([Property("label", DataType.string), Property("score", DataType.double)])
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(DataType.string, "image", required=False),
                ColSpec(DataType.string, "uri", required=False),
            ]
        ),
        outputs=Schema(
            [
                ColSpec(DataType.string, "label", required=False),
                ColSpec(DataType.double, "score", required=False),
                ColSpec(Array(scored), "top_k"),
                ColSpec(DataType.double, "margin", required=False),
                ColSpec(DataType.string, "status"),
                ColSpec(DataType.string, "reason", required=False),
                ColSpec(DataType.string, "content_hash", required=False),
            ]
        ),
        params=ParamSchema([ParamSpec("top_k", DataType.long, 3)]),
    )


def save_model(path: str, mlflow_model, keras_model, pip_requirements, signature, **_) -> None:
    """The flavour writer `Model.log` calls: the Keras flavour, then our pyfunc over it."""
    import logging

    import mlflow.keras

    # mlflow.keras accepts only tensor signatures and warns without one; the model's
    # signature is the pyfunc's (named columns), set below.
    keras_log = logging.getLogger("mlflow.keras.save")
    level = keras_log.level
    keras_log.setLevel(logging.ERROR)
    try:
        mlflow.keras.save_model(
            keras_model, path, mlflow_model=mlflow_model, pip_requirements=pip_requirements
        )
    finally:
        keras_log.setLevel(level)
    code = Path(path, "code")
    for source in BUNDLED_SOURCES:
        target = code / source
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / source, target)
    pyfunc = mlflow_model.flavors["python_function"]
    pyfunc["loader_module"] = LOADER_MODULE
    pyfunc["code"] = "code"
    pyfunc["data"] = "data"  # _load_pyfunc gets data/: model.keras and policy.json
    mlflow_model.signature = signature
    mlflow_model.save(str(Path(path, "MLmodel")))


def log_tagger_model(
    keras_model, metadata: dict, pip_requirements: list[str], registered_model: str | None
):
    """Log and register the tagger (Keras + image pyfunc flavours) on the active run."""
    from mlflow.models import Model

    flavor = SimpleNamespace(save_model=save_model, __name__="keras")
    return Model.log(
        None,
        name="model",
        flavor=flavor,
        flavor_name="keras",
        registered_model_name=registered_model or None,
        signature=serving_signature(),
        metadata=metadata,
        keras_model=keras_model,
        pip_requirements=pip_requirements,
    )


def attach_policy(model_id: str, policy_path: str) -> None:
    """Put an evaluation's policy.json into the logged model, where the pyfunc reads it."""
    import mlflow

    mlflow.MlflowClient().log_model_artifact(model_id, policy_path, POLICY_IN_MODEL)
