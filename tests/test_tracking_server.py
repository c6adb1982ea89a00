"""The embedded MLflow server stops with the command that started it, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from pathlib import Path
from components.common.tracking import LocalStore, local_server
from gallerytag.cli import exit_on_sigterm
exit_on_sigterm()
with local_server(LocalStore(Path(sys.argv[1]))) as uri:
    print(uri, flush=True)
    time.sleep(300)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_embedded_server_never_outlives_its_parent(tmp_path: Path, signum: int) -> None:
    """SIGTERM: the command exits 143 after stopping the server; SIGKILL: the guard stops
    the server's whole process group. Either way no server process is left."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    descendants: list[psutil.Process] = []
    try:
        assert holder.stdout.readline().startswith("http://127.0.0.1:")
        descendants = psutil.Process(holder.pid).children(recursive=True)
        assert any("mlflow" in " ".join(p.cmdline()) for p in descendants)
        holder.send_signal(signum)
        holder.wait(timeout=60)
        _, alive = psutil.wait_procs(descendants, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert holder.returncode == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
    finally:  # never leak a server from this test, whatever happened
        for process in descendants:
            if process.is_running():
                process.kill()
        if holder.poll() is None:
            holder.kill()
            holder.wait()
