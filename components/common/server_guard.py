"""Run a helper server (the embedded MLflow) so that it never outlives the process that needs it.

    python server_guard.py PARENT_PID -- COMMAND...

The guard leads its own process group and starts COMMAND in it. It stops the whole group
(COMMAND and every worker it forks, e.g. uvicorn's) when it gets SIGTERM, or when PARENT_PID
dies for any reason, SIGKILL included: the kernel sends it SIGTERM then (Linux
`PR_SET_PDEATHSIG`), and a check of its parent every 0.2 s covers other systems.
It imports only the standard library, so it runs as a plain script file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_TIMEOUT_S = 15.0


def ask_for_parent_death_signal() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux/glibc: the parent check in the loop still stops the group


def stop_group(child: subprocess.Popen) -> int:
    """SIGTERM the group, give it STOP_TIMEOUT_S, then SIGKILL whatever is left."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group signal reaches the guard too
    os.killpg(os.getpgrp(), signal.SIGTERM)
    try:
        return child.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # ends the guard as well
        return -signal.SIGKILL


def main() -> None:
    """Start the command and watch both the parent and the command."""
    parent, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        raise SystemExit("usage: python server_guard.py PARENT_PID -- COMMAND...")
    ask_for_parent_death_signal()
    if os.getppid() != int(parent):
        raise SystemExit(0)  # the parent died before the signal was armed
    child = subprocess.Popen(command)
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    while child.poll() is None:
        if stopping or os.getppid() != int(parent):
            raise SystemExit(stop_group(child))
        time.sleep(0.2)
    raise SystemExit(child.returncode)


if __name__ == "__main__":
    main()
