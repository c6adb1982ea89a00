"""Progress of a running Beam pipeline from its own counters.

Beam's local FnApiRunner blocks in `pipeline.run()` and its result has metrics only at the
end, so for it the counters come from the progress requests it sends running bundles
(`beam_io.local_runner` asks every `progress.poll_s()`) and from each finished bundle;
other runners' results are polled with `wait_until_finish(duration=...)` and `metrics()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability import portable_metrics
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.runner import PipelineResult, PipelineState

from components.common.progress import Progress, poll_s

Counter = tuple[str, str]  # (namespace, name) of a Beam user counter


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
    while not stop.wait(poll_s()):
        show(read)


def run_pipeline(
    pipeline: beam.Pipeline,
    progress: Progress,
    done: Counter,
    total: Counter | None = None,
) -> PipelineResult:
    """Run `pipeline` to the end, showing the `done` counter (of `total`) as it grows."""

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
        poll = poll_s()
        while True:
            asked = time.monotonic()
            if PipelineState.is_terminal(result.wait_until_finish(duration=poll * 1000)):
                break
            show(lambda name: _result_counter(result, name))
            # Some results return at once while running: poll, do not spin.
            time.sleep(max(0.0, poll - (time.monotonic() - asked)))
        result.wait_until_finish()
        show(lambda name: _result_counter(result, name))
        return result
    finally:
        progress.close()


def _result_counter(result: PipelineResult, name: Counter) -> int:
    """A user counter from a pipeline result (0 while the runner cannot tell yet)."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(name[0]).with_name(name[1]))
    except Exception:  # some runners publish metrics only when the job is done
        return 0
    return sum(int(item.committed or item.attempted or 0) for item in found["counters"])
