"""Live progress of long steps: a tqdm bar on a terminal, plain periodic lines elsewhere.

`Progress` draws counts the caller feeds in (evaluate's batches; Beam counters through
`beam_progress.run_pipeline`); `Reporter` and `relay` carry a training rank's progress to
the launcher and keep horovodrun's rank prefixes and the ranks' logs out of the user's view;
`hide_native_chatter` drops TensorFlow's start-up lines unless --verbose.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import IO

# How often a line is printed when the output is not a terminal (CI, KFP logs).
INTERVAL_ENV = "GALLERYTAG_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0
POLL_S = 0.5  # how often counters are read, and a rank sends its progress (at most)
VERBOSE_ENV = "GALLERYTAG_VERBOSE"  # "1": show child processes' logs and TF's start-up output
RELAY_ENV = "GALLERYTAG_PROGRESS_RELAY"  # "1": a parent draws this process's progress
EVENT = "gallerytag-progress "  # a progress event line from a child to the relaying parent
# horovodrun's prefix on each rank's lines: optional timestamp, then [rank]<stream>:
RANK_LINE = re.compile(r"^[^\[]*\[(\d+)\]<(stdout|stderr)>:(.*)$")
HIDDEN_TAIL = 60  # lines of hidden output shown when the child fails


# TensorFlow's native start-up lines (absl INFO before InitializeLog), printed by every
# process that imports it (Beam workers, training ranks); TF_CPP_MIN_LOG_LEVEL no longer
# silences them in TF 2.21.
NATIVE_CHATTER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\] )"
)
_user_stderr: int | None = None  # the terminal (or file) fd 2 was before the filter


def verbose() -> bool:
    """Whether the user asked for everything (`gallerytag -v`)."""
    return os.environ.get(VERBOSE_ENV) == "1"


def _stderr_is_fd2() -> bool:
    """Whether Python's stderr is the process's fd 2 (not a harness capturing it)."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


def hide_native_chatter() -> None:
    """Unless --verbose, pass this process's fd 2, which its child processes inherit,
    through a filter that drops TensorFlow's native start-up lines (once per process)."""
    global _user_stderr
    if verbose() or _user_stderr is not None or not _stderr_is_fd2():
        return
    sys.stderr.flush()
    _user_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        reader_gone = False
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:  # read to the end always, or writers would block on a full pipe
                if reader_gone or NATIVE_CHATTER.match(line.decode(errors="replace")):
                    continue
                try:
                    os.write(_user_stderr, line)
                except OSError:  # e.g. `2>&1 | head` has exited
                    reader_gone = True

    thread = threading.Thread(target=forward, daemon=True, name="stderr-filter")
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(_user_stderr, 2)  # closes this process's write end: the filter sees EOF
        thread.join(timeout=2)  # once children still holding it have exited

    atexit.register(restore)


@functools.cache
def _user_stream(fd: int) -> IO[str]:
    return os.fdopen(os.dup(fd), "w", buffering=1)


def user_stderr() -> IO[str]:
    """Where progress goes: the user's stderr, bypassing the chatter filter (a bar needs
    to see the terminal)."""
    return sys.stderr if _user_stderr is None else _user_stream(_user_stderr)


def _interval() -> float:
    try:
        return max(0.05, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def poll_s() -> float:
    """How often counters are read: POLL_S, or as often as lines are printed when that is
    more often (a short run polled every POLL_S can finish between two readings)."""
    return min(POLL_S, _interval())


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Progress:
    """Count, rate and ETA of one long step, shown as a bar (TTY) or periodic lines."""

    def __init__(
        self,
        what: str,
        unit: str = "images",
        total: int | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.what, self.unit, self.total = what, unit, total
        self.stream = stream or user_stderr()
        self.done = 0
        self.note = ""
        self._interval = _interval()
        self._created = self._last_line = time.monotonic()
        self._printed = -1
        self._base: tuple[float, int] | None = None  # first report: where the rate starts
        self._bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=what, unit=f" {unit}", file=self.stream, dynamic_ncols=True
            )

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        """Record that `done` units (of `total`, once known) are finished."""
        if self._base is None and done > 0:
            # From the first work done: start-up is no part of the rate, and a resumed
            # training starts past 0.
            self._base = (time.monotonic(), done)
        self.done = max(self.done, done)  # in-flight counters can lag a finished bundle
        self.note = note or self.note
        if total:
            self.total = max(self.total or 0, total)
        if self._bar is not None:
            if self.total and self._bar.total != self.total:
                self._bar.total = self.total
            self._bar.n = self.done
            self._bar.set_postfix_str(self.note, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval and self.done not in (0, self._printed):
            self._line(now)

    def rate(self) -> float:
        """Units per second since the first work was reported (since the start while that
        is all there is)."""
        now = time.monotonic()
        if self._base is not None and self.done > self._base[1]:
            started, first = self._base
            return (self.done - first) / max(now - started, 1e-9)
        return self.done / max(now - self._created, 1e-9)

    def line(self) -> str:
        """The plain progress line: count (of total), rate, ETA."""
        rate = self.rate()
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        text = f"{self.what}: {count} {self.unit}, {rate:.1f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {_clock((self.total - self.done) / rate)}"
        return f"{text} ({self.note})" if self.note else text

    def write(self, text: str) -> None:
        """Print a line of the step's own output without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def _line(self, now: float) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last_line, self._printed = now, self.done

    def close(self) -> None:
        """End the bar (plain lines need no end: the step prints its own summary)."""
        if self._bar is not None:
            self._bar.n = self.done
            self._bar.close()


class Reporter:
    """Progress of work in a child process (a training rank): event lines for the parent
    that relays them (`relay`), or plain periodic lines of its own when run directly (an
    MPIJob launcher pod)."""

    def __init__(self, what: str, unit: str) -> None:
        relayed = os.environ.get(RELAY_ENV) == "1"
        self._own = None if relayed else Progress(what, unit, stream=sys.stdout)
        self._sent = 0.0

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        """Report `done` of `total` (at most every poll_s() to the parent)."""
        if self._own is not None:
            self._own.update(done, total, note)
            return
        now = time.monotonic()
        if now - self._sent >= poll_s() or (total and done >= total):
            print(EVENT + json.dumps({"done": done, "total": total, "note": note}), flush=True)
            self._sent = now


def relay(command: list[str], progress: Progress) -> int:
    """Run `command` (horovodrun, or one worker) and return its exit code. What the user
    reads: rank 0's progress events drawn on `progress`, rank 0's own lines without
    horovodrun's `[0]<stdout>:` prefix, and nothing else unless --verbose; the hidden lines'
    tail is printed when the command fails."""
    env = {**os.environ, RELAY_ENV: "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
        bufsize=1, env=env,
    )  # fmt: skip
    hidden: collections.deque[str] = collections.deque(maxlen=HIDDEN_TAIL)
    show_all = verbose()

    def drain_stderr() -> None:
        for line in process.stderr:  # logs and TensorFlow's start-up output of every rank
            if show_all:
                print(line.rstrip("\n"), file=sys.stderr, flush=True)
            else:
                hidden.append(line.rstrip("\n"))

    errors = threading.Thread(target=drain_stderr, daemon=True)
    errors.start()
    try:
        for raw in process.stdout:
            line = raw.rstrip("\n")
            match = RANK_LINE.match(line)
            rank, text = (int(match[1]), match[3]) if match else (None, line)
            if rank not in (None, 0):
                (progress.write if show_all else hidden.append)(line)
            elif text.startswith(EVENT):
                event = json.loads(text[len(EVENT) :])
                progress.update(event["done"], event.get("total"), event.get("note", ""))
            else:
                progress.write(text)
        code = process.wait()
    except BaseException:
        process.kill()  # as subprocess.run does: the workers do not outlive an interrupt
        process.wait()
        raise
    finally:
        errors.join(timeout=5)
        progress.close()
    if code != 0 and hidden:
        print("last output of the workers:", *hidden, sep="\n", file=sys.stderr, flush=True)
    return code
