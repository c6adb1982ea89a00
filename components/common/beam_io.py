"""Beam plumbing shared by the ingest and tag pipelines: runner defaults, JSONL sinks, commit.

Both pipelines claim their output (`claim.py`), stage their files under
`<out>/.staging-<run id>/` and publish them with `commit_staged`, which checks the files in
place against the run's counts and writes a marker file last: no marker, no complete output.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineRunner

from components.common import progress, runners, storage
from components.common.claim import OutputClaim

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3


def default_beam_args(beam_args: list[str]) -> list[str]:
    """Use all local cores with the DirectRunner unless the caller chose a runner or mode."""
    if runners.runner_name(beam_args) is not None:
        return beam_args
    defaults = []
    chosen_mode = [arg for arg in beam_args if arg.startswith("--direct_running_mode")]
    if not chosen_mode:
        defaults.append("--direct_running_mode=multi_processing")
    parallel = not chosen_mode or not chosen_mode[-1].endswith("in_memory")
    if parallel and not any(arg.startswith("--direct_num_workers") for arg in beam_args):
        defaults.append("--direct_num_workers=0")  # 0 = one worker per core
    return defaults + beam_args


def new_pipeline(beam_args: list[str]) -> beam.Pipeline:
    """A pipeline on the runner the arguments name, else on Beam's local FnApiRunner."""
    options = PipelineOptions(default_beam_args(beam_args))
    if runners.runner_name(beam_args) is not None:
        return beam.Pipeline(options=options)
    return beam.Pipeline(runner=local_runner(options), options=options)


def local_runner(options: PipelineOptions) -> PipelineRunner:
    """The FnApiRunner exactly as Beam's DirectRunner builds it, minus its Prism attempt.

    Since Beam 2.68 the DirectRunner first tries to download the Prism runner binary from
    GitHub and falls back to this one when that fails, so without a runner pinned, how a
    pipeline runs (and how long it waits on the network) depends on the machine's network.
    """
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    release_freed_memory()  # before the runner starts its worker processes
    # Workers read the pipeline options (GCS credentials, project...) from the provision info.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(provision),
        # Running bundles report their counters this often: the live progress (progress.py).
        progress_request_frequency=progress.poll_s(),
    )


def release_freed_memory() -> None:
    """Have glibc hand freed heap memory back to the OS past 64 KiB and serve blocks over
    4 MiB by mmap, in this process and the worker processes it starts from now on (they
    inherit MALLOC_TRIM_THRESHOLD_ and MALLOC_MMAP_THRESHOLD_).

    The local runner moves shuffles and accumulators through multi-MB buffers; with glibc's
    adaptive thresholds their freed pages stayed resident, so peak memory grew with the
    input even though live data did not (docs/benchmarks.md). Dask sets the same trim
    threshold for its workers. Setting it switches off the adaptive mmap threshold too,
    which would then stay at 128 KiB: every image buffer above that (file bytes, decoded
    pixels) became a fresh mmap, zero-filled page by page, and a full decode ran ~25% slower.
    A fixed 4 MiB keeps those on the heap. Values the user set win; elsewhere than glibc
    this does nothing.
    """
    settings = (
        (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 64 * 1024),
        (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 4 * 1024 * 1024),
    )
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        for parameter, variable, default in settings:
            libc.mallopt(parameter, int(os.environ.setdefault(variable, str(default))))
    except (OSError, AttributeError, ValueError) as error:  # not glibc: nothing to tune
        log.debug("mallopt not available: %s", error)


def write_jsonl(rows: beam.PCollection, path: str, name: str, shards: int | None = None) -> None:
    """Write dict rows as JSON lines: one file named `path` (shards=None), or the shard files
    `path-SSSSS-of-NNNNN.jsonl`."""
    template = "" if shards is None else "-SSSSS-of-NNNNN"
    suffix = "" if shards is None else ".jsonl"
    _ = (
        rows
        | f"{name}ToJson" >> beam.Map(lambda row: json.dumps(row, sort_keys=True))
        | f"Write{name}"
        >> beam.io.WriteToText(
            path, num_shards=shards or 1, shard_name_template=template, file_name_suffix=suffix
        )
    )


def write_json_value(value: beam.PCollection, path: str, name: str) -> None:
    """Write a single-element PCollection as one JSON file at `path`.

    Written by the step that holds the value: a Beam file sink would add four stages (and
    their fixed cost) for one small file. A retried bundle rewrites the same content.
    """
    _ = value | f"Write{name}" >> beam.Map(_write_json, path)


def _write_json(value: object, path: str) -> None:
    """Write one JSON document whole (locally: temp file and rename)."""
    storage.write_text(path, json.dumps(value))


def read_json(path: str) -> object:
    """Read a JSON file written by `write_json_value`."""
    return json.loads(storage.read_text(path))


def commit_staged(
    claim: OutputClaim,
    marker: str,
    marker_text: str,
    is_previous_output: Callable[[str], bool],
    verify: Callable[[list[str]], None],
    folders: tuple[str, ...] = (),
) -> None:
    """Publish the claim's staged files into its output, replacing an earlier run's; write
    `marker` last, only after `verify` (given the output files now in place) accepts them.

    Staged files keep their path relative to the staging folder. `is_previous_output` gets
    such relative paths: of the files at the top of the output and in `folders` (sub-folders
    an output may use). Files whose path starts with "_" stay in staging (pipeline-internal
    figures).
    """
    out, staging = claim.out, claim.staging
    claim.verify()  # a run that lost its claim must not touch the output
    marker_path = storage.join(out, marker)
    if storage.exists(marker_path):
        storage.delete(marker_path)  # from here until the end, `out` is visibly incomplete
    for old in storage.shallow_files(out, folders):
        if is_previous_output(old):
            storage.delete(storage.join(out, old))
    for folder in folders:  # an output folder the previous run used and this one may not
        where = storage.join(out, folder)
        if storage.exists(where) and not any(storage.list_files(where)):
            storage.delete(where, recursive=True)
    head = staging.rstrip("/") + "/"
    for staged in storage.list_files(staging):
        relative = staged[len(head) :] if staged.startswith(head) else staged.rsplit("/", 1)[-1]
        if not relative.startswith("_"):
            storage.move(staged, storage.join(out, relative))
    # The marker's counts are checked against what is really in `out` now, not against
    # what the pipeline believed it wrote.
    committed = [
        storage.join(out, relative)
        for relative in storage.shallow_files(out, folders)
        if is_previous_output(relative)
    ]
    verify(committed)
    claim.verify()
    storage.write_text(marker_path, marker_text)
    storage.delete(staging, recursive=True)
