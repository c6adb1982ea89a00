"""MLflow helpers: find or start a tracking server, and load a tagger model with its metadata.

With no MLFLOW_TRACKING_URI the CLI starts a private `mlflow server` (SQLite backend, local
artifacts under GALLERYTAG_HOME) for the duration of one command, so a laptop needs no setup.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from components.common import server_guard
from components.common.dataset import validate_label

log = logging.getLogger(__name__)
METADATA_KEY = "gallerytag"
OPENVINO_ARTIFACT = "openvino"  # folder of the OpenVINO IR inside a logged tagger model
SERVER_START_TIMEOUT_S = 120


class TrackingUnavailable(RuntimeError):
    """The configured MLflow tracking server cannot be reached."""


@dataclass(frozen=True)
class LocalStore:
    """Where the embedded MLflow keeps its database and artifacts."""

    home: Path

    @property
    def backend_uri(self) -> str:
        """SQLite URI of the run database."""
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        """Folder for run and model artifacts."""
        return self.home / "mlartifacts"

    def ui_command(self) -> str:
        """The command a person runs to browse these runs, and the page to open."""
        # MLflow 3.17's UI opens experiments on its GenAI views until the browser is switched
        # to "Model training" (it remembers that choice).
        return (
            f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri {self.backend_uri} "
            f"--artifacts-destination {self.artifacts} --port 5000 (then pick 'Model training' "
            "at the top left)"
        )


def gallerytag_home() -> Path:
    """Local state directory: $GALLERYTAG_HOME, else ./.gallerytag."""
    return Path(os.environ.get("GALLERYTAG_HOME", ".gallerytag")).resolve()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with the fix, when an http(s) tracking URI does not answer."""
    if not uri.startswith(("http://", "https://")):
        return  # file: or sqlite: stores are opened directly by the client
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as error:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is not reachable ({error.__class__.__name__}). "
            "Start it, fix MLFLOW_TRACKING_URI, or unset MLFLOW_TRACKING_URI to use the "
            "embedded local server."
        ) from None


@contextlib.contextmanager
def local_server(store: LocalStore) -> Iterator[str]:
    """Run `mlflow server` on a free loopback port for the duration of the block."""
    store.home.mkdir(parents=True, exist_ok=True)
    store.artifacts.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_file = (store.home / "mlflow-server.log").open("ab")
    # The guard stops the server's whole process group if this process dies, even by
    # SIGKILL: a leaked server otherwise runs on for as long as the machine does.
    command = [
        sys.executable, server_guard.__file__, str(os.getpid()), "--",
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", store.backend_uri,
        "--artifacts-destination", str(store.artifacts),
    ]  # fmt: skip
    # Own process group: the server forks workers, and all of them must stop with it.
    process = subprocess.Popen(
        command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise TrackingUnavailable(
                    f"the local MLflow server exited with code {process.returncode}; "
                    f"see {store.home / 'mlflow-server.log'}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{uri}/health", timeout=1).ok:
                    break
            if time.monotonic() > deadline:
                raise TrackingUnavailable(
                    f"the local MLflow server did not start within {SERVER_START_TIMEOUT_S} s"
                )
            time.sleep(0.5)
        log.info("local MLflow server at %s (store %s)", uri, store.home)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log_file.close()


@contextlib.contextmanager
def tracking(uri: str | None = None) -> Iterator[str]:
    """Yield a reachable tracking URI: the given one, $MLFLOW_TRACKING_URI, or a local server.

    Sets MLFLOW_TRACKING_URI for the block so child processes (Horovod ranks, Beam workers)
    talk to the same server.
    """
    import mlflow

    configured = uri or os.environ.get("MLFLOW_TRACKING_URI")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    with contextlib.ExitStack() as stack:
        if configured:
            check_reachable(configured)
            active = configured
        else:
            active = stack.enter_context(local_server(LocalStore(gallerytag_home())))
        os.environ["MLFLOW_TRACKING_URI"] = active
        mlflow.set_tracking_uri(active)
        try:
            yield active
        finally:
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous


@dataclass(frozen=True)
class TaggerSpec:
    """A tagger model on local disk plus what it needs to be fed and read."""

    model_file: str  # a Keras 3 `.keras` file
    labels: list[str]
    image_size: int
    resize_mode: str
    multi_label: bool
    uri: str
    run_id: str | None
    version: str | None
    backbone: str | None = None  # registry name of the pretrained network it was tuned from
    weights: str = "imagenet"  # the backbone's starting weights ("imagenet", "none", a file)
    openvino_model: str | None = None  # model.xml of the OpenVINO IR logged with the version
    model_id: str | None = None  # MLflow 3 logged model id (m-...), None for older models

    def __post_init__(self) -> None:
        # Labels name the folders `tag --copy-to` writes into: one like "../../x" from a
        # model's metadata would write outside them.
        for label in self.labels:
            try:
                validate_label(label)
            except ValueError as error:
                raise ValueError(f"model {self.uri} has an unusable label: {error}") from None

    def load(self):
        """Load the Keras model (call once per process: it is the expensive part)."""
        import keras

        return keras.saving.load_model(self.model_file)


def check_model_file(path: str) -> None:
    """Fail at once, naming the file, when a `.keras` file is not a whole Keras 3 archive
    (before any Beam worker tries to load it)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()  # reads every member and checks its CRC
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"model file {path} cannot be read as a .keras archive: {error}") from None
    if damaged or not {"config.json", "model.weights.h5"} <= names:
        problem = f"member {damaged} is damaged" if damaged else "config or weights are missing"
        raise ValueError(f"model file {path} is not a usable .keras archive: {problem}")


def model_metadata(
    labels: list[str],
    image_size: int,
    resize_mode: str,
    multi_label: bool,
    backbone: str,
    weights: str = "imagenet",
) -> dict:
    """The metadata block stored in the MLmodel file next to a tagger model."""
    return {
        METADATA_KEY: {
            "labels": labels,
            "image_size": image_size,
            "resize_mode": resize_mode,
            "multi_label": multi_label,
            "backbone": backbone,
            "weights": weights,
            "input": "RGB uint8 pixels as float32, shape (N, size, size, 3); no normalisation",
        }
    }


def fetch_tagger(uri: str, dst_dir: str) -> TaggerSpec:
    """Download a tagger from an MLflow URI (models:/name@alias, models:/name/3, runs:/...)
    or read a local MLflow model directory, into `dst_dir`."""
    import mlflow
    from mlflow.models import Model

    local = Path(uri)
    version = None
    source = uri
    try:
        if uri.startswith("models:/") and not uri.startswith("models:/m-"):
            # Resolve an alias to its version once, before the download: resolved after it,
            # a promotion in between would label rows with a version that made none of them.
            name, _, alias = uri[len("models:/") :].partition("@")
            if alias:
                version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
                source = f"models:/{name}/{version}"
            else:
                version = name.rstrip("/").rsplit("/", 1)[-1]
        if local.is_dir() and (local / "MLmodel").exists():
            model_dir = local
        else:
            model_dir = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=dst_dir)
            )
        mlmodel = Model.load(str(model_dir / "MLmodel"))
    except Exception as error:
        raise ValueError(
            f"cannot load model {uri}: {error}. Use models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/model or a local MLflow model directory."
        ) from None
    meta = (mlmodel.metadata or {}).get(METADATA_KEY)
    if not meta or "keras" not in mlmodel.flavors:
        raise ValueError(f"{uri} is not a gallerytag Keras model (no '{METADATA_KEY}' metadata)")
    data = mlmodel.flavors["keras"].get("data", "data")
    check_model_file(str(model_dir / data / "model.keras"))
    ir_file = model_dir / OPENVINO_ARTIFACT / "model.xml"
    return TaggerSpec(
        model_file=str(model_dir / data / "model.keras"),
        labels=list(meta["labels"]),
        image_size=int(meta["image_size"]),
        resize_mode=meta["resize_mode"],
        multi_label=bool(meta["multi_label"]),
        uri=uri,
        run_id=mlmodel.run_id,
        version=str(version) if version else None,
        backbone=meta.get("backbone"),
        weights=str(meta.get("weights", "imagenet")),
        openvino_model=str(ir_file) if ir_file.exists() else None,
        model_id=getattr(mlmodel, "model_id", None),
    )


def log_openvino_ir(model_uri: str, model_id: str, probe) -> float | None:
    """Rank 0, before registration: export the logged Keras model (as downloaded, so the IR
    matches the bytes users get) to f32 OpenVINO IR, check it against Keras on `probe`, and
    log it into the logged model's artifacts (`openvino/`). Returns max |dp|, or None when
    no IR was logged (OpenVINO missing, or the export failed or differs: tag then exports
    on the fly and checks again)."""
    import tempfile

    import keras
    import mlflow
    from mlflow.models import Model

    try:
        from models import openvino_ir
    except ImportError as error:
        log.warning("no OpenVINO IR logged with %s: %s", model_uri, error)
        return None
    with tempfile.TemporaryDirectory(prefix="gallerytag-ir-") as tmp:
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        mlmodel = Model.load(str(model_dir / "MLmodel"))
        keras_file = model_dir / mlmodel.flavors["keras"].get("data", "data") / "model.keras"
        spec = {
            **(mlmodel.metadata or {}).get(METADATA_KEY, {}),
            "keras_sha256": openvino_ir.file_sha256(keras_file),
        }
        model = keras.saving.load_model(keras_file)
        ir_dir = Path(tmp) / OPENVINO_ARTIFACT
        try:
            ir_file = openvino_ir.export_openvino(model, ir_dir, spec)
            difference = openvino_ir.max_difference(
                model, openvino_ir.CompiledTagger(str(ir_file)), probe
            )
        except Exception as error:  # an optional artifact must not fail a finished training
            log.warning("OpenVINO export of %s failed, none logged: %s", model_uri, error)
            return None
        if difference > openvino_ir.PARITY_TOLERANCE:
            log.warning("OpenVINO IR of %s differs from Keras by %.2g: not logged",
                        model_uri, difference)  # fmt: skip
            return None
        mlflow.MlflowClient().log_model_artifacts(model_id, str(ir_dir), OPENVINO_ARTIFACT)
        return difference


def run_json_artifact(run_id: str | None, artifact_path: str, tmp: str) -> dict | None:
    """A JSON artifact of an MLflow run (e.g. evaluation/policy.json), or None when the run
    or the artifact does not exist."""
    import mlflow

    if not run_id:
        return None
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=tmp
        )
    except Exception:  # MLflow raises several types for a missing artifact
        return None
    return json.loads(Path(path).read_text())  # downloaded: a local file
