"""What the Beam workers need to run the model: its files shipped, its handler, its threads."""

from __future__ import annotations

import dataclasses
import os

from apache_beam.options.pipeline_options import PipelineOptions

from components.common import beam_io, runners, storage
from components.common.images import content_hash
from components.common.tracking import TaggerSpec
from components.tag.handler import KerasImageHandler, OpenVINOImageHandler
from components.tag.runtime import RuntimeChoice


def model_handler(
    tagger: TaggerSpec, runtime: RuntimeChoice | None, threads: int | None
) -> KerasImageHandler:
    """The RunInference handler of the chosen runtime."""
    if runtime is None or runtime.name == "keras":
        return KerasImageHandler(runtime.model_file if runtime else tagger.model_file,
                                 threads=threads)  # fmt: skip
    return OpenVINOImageHandler(runtime.model_file, threads=threads, precision=runtime.precision)


def inference_threads(beam_args: list[str]) -> int | None:
    """TF threads per worker process with the local multi-processing runner, so that its
    one-process-per-core workers do not each start a pool as wide as the machine (measured:
    +3.7% images/s on 2 cores); None (TF's default) for any other runner or mode."""
    options = PipelineOptions(beam_io.default_beam_args(beam_args)).get_all_options()
    if not runners.is_local(beam_args) or options.get("direct_running_mode") != "multi_processing":
        return None
    cores = os.cpu_count() or 1
    workers = options.get("direct_num_workers") or cores
    return max(1, cores // workers)


def stage_model_for_workers(tagger: TaggerSpec, beam_args: list[str]) -> TaggerSpec:
    """On a remote runner, copy the model file to --temp_location so workers can load it."""
    staged = stage_file_for_workers(tagger.model_file, beam_args)
    return tagger if staged == tagger.model_file else dataclasses.replace(tagger, model_file=staged)


def stage_runtime_for_workers(runtime: RuntimeChoice, beam_args: list[str]) -> RuntimeChoice:
    """On a remote runner, ship the runtime's files (an IR: model.xml and model.bin)."""
    if runtime.name == "keras" or "://" in runtime.model_file:
        return runtime
    staged = stage_file_for_workers(runtime.model_file, beam_args)
    if staged != runtime.model_file:
        stage_file_for_workers(runtime.model_file[: -len(".xml")] + ".bin", beam_args,
                               name=staged.rsplit("/", 1)[-1][: -len(".xml")] + ".bin")  # fmt: skip
    return dataclasses.replace(runtime, model_file=staged)


def stage_file_for_workers(path: str, beam_args: list[str], name: str | None = None) -> str:
    """On a remote runner, copy a local model file to --temp_location (named by its content
    hash, or `name`) and return the copy's URL; on a local runner the path itself."""
    if runners.is_local(beam_args) or "://" in path:
        return path
    temp = PipelineOptions(beam_args).get_all_options().get("temp_location")
    if not temp:
        runner = runners.runner_name(beam_args)
        raise ValueError(f"--runner {runner} needs --temp_location gs://... to ship the model")
    if name is None:
        with open(path, "rb") as stream:
            digest = content_hash(stream.read())
        name = f"{digest[:16]}{os.path.splitext(path)[1]}"
    staged = storage.join(temp, "gallerytag-models", name)
    if not storage.exists(staged):
        storage.copy(path, staged)
    return staged
