"""Live progress of long steps: a tqdm bar on a terminal, plain periodic lines elsewhere.

`Progress` draws it from counts the caller feeds in (evaluate's batches, training epochs);
`run_pipeline` feeds it from a running Beam pipeline's own counters. Beam's local FnApiRunner
blocks in `pipeline.run()` and publishes its metrics only at the end, so for it the counters
come from the runner's progress requests to its workers (in flight) and from each finished
bundle; other runners' results are polled with `wait_until_finish(duration=...)`.
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
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # Beam is imported only where a pipeline runs (not in training ranks)
    import apache_beam as beam
    from apache_beam.runners.runner import PipelineResult

# How often a line is printed when the output is not a terminal (CI, KFP logs).
INTERVAL_ENV = "GALLERYTAG_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0
POLL_S = 0.5  # how often counters are read (and the local runner asks its workers)
Counter = tuple[str, str]  # (namespace, name) of a Beam user counter
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
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not NATIVE_CHATTER.match(line.decode(errors="replace")):
                    os.write(_user_stderr, line)

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
        self._last_line = time.monotonic()
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
        """Units per second since the first report."""
        if self._base is None:
            return 0.0
        started, first = self._base
        return (self.done - first) / max(time.monotonic() - started, 1e-9)

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


class _LocalCounters:
    """User counters of the bundles the local FnApiRunner runs: the latest progress report of
    each running bundle plus the final counts of each finished one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, dict[Counter, int]] = {}
        self._finished: dict[Counter, int] = {}
        self._closed: set[str] = set()

    @staticmethod
    def _counts(infos: Any) -> dict[Counter, int]:
        from apache_beam.runners.portability import portable_metrics

        counters = portable_metrics.from_monitoring_infos(infos, True)[0]
        totals: dict[Counter, int] = {}
        for key, value in counters.items():
            name = (key.metric.namespace, key.metric.name)
            totals[name] = totals.get(name, 0) + int(value)
        return totals

    def running(self, instruction_id: str, infos: Any) -> None:
        """A progress report of a bundle still being processed."""
        counts = self._counts(infos)
        with self._lock:
            if instruction_id not in self._closed:
                self._running[instruction_id] = counts

    def finished(self, instruction_id: str, infos: Any) -> None:
        """The final counts of a bundle (replacing its last progress report)."""
        counts = self._counts(infos)
        with self._lock:
            self._closed.add(instruction_id)
            self._running.pop(instruction_id, None)
            for name, value in counts.items():
                self._finished[name] = self._finished.get(name, 0) + value

    def value(self, name: Counter) -> int:
        """The counter summed over finished and running bundles."""
        with self._lock:
            running = sum(counts.get(name, 0) for counts in self._running.values())
            return self._finished.get(name, 0) + running


_active: _LocalCounters | None = None  # the local run being watched (one at a time)
_hook_lock = threading.Lock()


def _hook_local_runner() -> None:
    """Route the FnApiRunner's progress responses and finished-bundle results to `_active`.

    Beam 2.77's ProgressRequester takes a callback, but the BundleManager creates it without
    one and keeps the result of each bundle to itself; both are reached here, once."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    with _hook_lock:
        if getattr(fn_runner, "_gallerytag_progress", False):
            return
        base = fn_runner.ProgressRequester

        class ReportingRequester(base):  # type: ignore[misc, valid-type]
            def __init__(self, worker_handler, instruction_id, frequency, callback=None):
                def report(progress) -> None:
                    if _active is not None:
                        _active.running(instruction_id, progress.monitoring_infos)

                super().__init__(worker_handler, instruction_id, frequency, callback or report)

        process_bundle = fn_runner.BundleManager.process_bundle

        def reporting_process_bundle(self, *args, **kwargs):
            result, splits = process_bundle(self, *args, **kwargs)
            if _active is not None:
                _active.finished(result.instruction_id, result.process_bundle.monitoring_infos)
            return result, splits

        fn_runner.ProgressRequester = ReportingRequester
        fn_runner.BundleManager.process_bundle = reporting_process_bundle
        fn_runner._gallerytag_progress = True


def _watch(stop: threading.Event, read: Callable[[Counter], int], show: Callable) -> None:
    while not stop.wait(POLL_S):
        show(read)


def run_pipeline(
    pipeline: beam.Pipeline,
    progress: Progress,
    done: Counter,
    total: Counter | None = None,
) -> PipelineResult:
    """Run `pipeline` to the end, showing the `done` counter (of `total`) as it grows."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.runner import PipelineState

    def show(read: Callable[[Counter], int]) -> None:
        progress.update(read(done), read(total) if total else None)

    global _active
    try:
        if isinstance(pipeline.runner, fn_runner.FnApiRunner):
            _hook_local_runner()
            counters, stop = _LocalCounters(), threading.Event()
            _active = counters
            watcher = threading.Thread(target=_watch, args=(stop, counters.value, show))
            watcher.daemon = True
            watcher.start()
            try:
                result = pipeline.run()  # blocks until the pipeline is done
            finally:
                stop.set()
                watcher.join()
                _active = None
            show(counters.value)
            return result
        result = pipeline.run()
        while True:
            asked = time.monotonic()
            if PipelineState.is_terminal(result.wait_until_finish(duration=POLL_S * 1000)):
                break
            show(lambda name: _result_counter(result, name))
            # Some results return at once while running: poll, do not spin.
            time.sleep(max(0.0, POLL_S - (time.monotonic() - asked)))
        result.wait_until_finish()
        show(lambda name: _result_counter(result, name))
        return result
    finally:
        progress.close()


def _result_counter(result: PipelineResult, name: Counter) -> int:
    """A user counter from a pipeline result (0 while the runner cannot tell yet)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(name[0]).with_name(name[1]))
    except Exception:  # some runners publish metrics only when the job is done
        return 0
    return sum(int(item.committed or item.attempted or 0) for item in found["counters"])


class Reporter:
    """Progress of work in a child process (a training rank): event lines for the parent
    that relays them (`relay`), or plain periodic lines of its own when run directly (an
    MPIJob launcher pod)."""

    def __init__(self, what: str, unit: str) -> None:
        relayed = os.environ.get(RELAY_ENV) == "1"
        self._own = None if relayed else Progress(what, unit, stream=sys.stdout)
        self._sent = 0.0

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        """Report `done` of `total` (at most every POLL_S to the parent)."""
        if self._own is not None:
            self._own.update(done, total, note)
            return
        now = time.monotonic()
        if now - self._sent >= POLL_S or (total and done >= total):
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
            elif match and match[2] == "stderr":
                (progress.write if show_all else hidden.append)(text)
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
