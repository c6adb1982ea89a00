"""Benchmark: bulk tagging end to end vs the model alone per runtime, vs hand-written loops,
memory, and the share of JPEG decoding.

All in one run, same model (EfficientNet-Lite0 tagger at 224 px), images and batch size:
  1. model-only images/s on pre-decoded batches of real photos for Keras, OpenVINO f32 (the
     exact optimised runtime), OpenVINO bf16 (reduced precision, for reference) and ONNX
     Runtime when `onnxruntime` and `tf2onnx` are importable; each with max |dp| and top-1
     agreement against Keras; rounds interleaved, median reported (the machine is shared);
  2. end-to-end `gallerytag tag` pipeline images/s (DirectRunner, all cores) with the default
     runtime (auto) on N photo-sized JPEGs, ratio to the fastest exact model-only rate
     (goal >= 0.85), and to today's Keras pipeline on the small set (goal >= 1.8);
  3. speed-up over the loop a user writes by hand (open, decode, predict one image at a time)
     and over the retrain blog's one-process-per-image script;
  4. peak memory (RSS of the whole process tree) of the pipeline at a small and a large N;
  5. decoding: reduced-scale (DCT draft, as the pipeline) vs full decode images/s on one
     core, and the share of the pipeline's time decoding would take spread over all cores.
Usage: .venv/bin/python bench/tag.py [--images 20000] [--small 5000] [--batch 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.gallery import make_gallery, subset  # noqa: E402

ONE_IMAGE_SCRIPT = """
import sys, numpy as np, keras
from PIL import Image
model = keras.saving.load_model(sys.argv[1])
image = Image.open(sys.argv[2]).convert("RGB").resize((224, 224))
print(model.predict(np.asarray(image, np.float32)[None], verbose=0).argmax())
"""


class PeakMemory:
    """Samples the RSS of this process and all its children every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker may exit meanwhile
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def build_tagger(workdir: Path):
    """A Lite0 tagger (ImageNet backbone, 2-label head) saved as a .keras file."""
    from components.common.tracking import TaggerSpec
    from models.head import build_classifier
    from models.registry import build_backbone

    path = workdir / "lite0-tagger.keras"
    if not path.exists():
        build_classifier(build_backbone("efficientnet_lite0", 224), 2).save(path)
    return TaggerSpec(str(path), ["china", "flower"], 224, "pad", False, "bench", None, "1")


def onnx_predictor(model, workdir: Path):
    """ONNX Runtime on the same network (tf2onnx from the SavedModel), or the reason it is
    not measured."""
    try:
        import onnxruntime
        import tf2onnx  # noqa: F401 (the converter runs as a module below)
    except ImportError as error:
        return f"not measured: {error.name} not installed"
    onnx_file = workdir / "lite0-tagger.onnx"
    if not onnx_file.exists():
        saved = workdir / "lite0-savedmodel"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved),
                        "--output", str(onnx_file), "--opset", "17"],
                       check=True, capture_output=True)  # fmt: skip
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = onnxruntime.InferenceSession(str(onnx_file), options)
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def model_only(
    tagger, ir_file: str, files: list[Path], batch: int, images: int, workdir: Path, rounds: int
) -> dict[str, dict]:
    """Per runtime: images/s of one process predicting batches decoded beforehand (cycled to
    `images`; median of `rounds` interleaved rounds), max |dp| and top-1 agreement vs Keras."""
    import keras

    from components.common.images import load_for_model
    from models.openvino_ir import CompiledTagger

    model = keras.saving.load_model(tagger.model_file)
    decoded = np.stack([load_for_model(f.read_bytes(), 224) for f in files[: batch * 4]])
    decoded = decoded.astype(np.float32)
    predictors = {
        "keras": model.predict_on_batch,
        "openvino f32": CompiledTagger(ir_file).predict,
        "openvino bf16 (reduced precision)": CompiledTagger(ir_file, precision="bf16").predict,
    }
    onnx = onnx_predictor(model, workdir)
    if callable(onnx):
        predictors["onnxruntime f32"] = onnx
    reference = np.asarray(model.predict_on_batch(decoded))
    results = {}
    for name, predict in predictors.items():
        parts = [predict(decoded[i : i + batch]) for i in range(0, len(decoded), batch)]
        got = np.concatenate(parts)
        results[name] = {
            "max_dp": float(np.max(np.abs(got - reference))),
            "top1_agreement": float(np.mean(got.argmax(1) == reference.argmax(1))),
            "rates": [],
        }
    steps = max(1, images // batch)
    batches = max(1, len(decoded) // batch)  # fewer than 4 when the gallery is that small
    for _ in range(rounds):
        for name, predict in predictors.items():
            started = time.perf_counter()
            for step in range(steps):
                start = (step % batches) * batch
                predict(decoded[start : start + batch])
            results[name]["rates"].append(steps * batch / (time.perf_counter() - started))
    for result in results.values():
        result["rate"] = statistics.median(result["rates"])
    if not callable(onnx):
        results["onnxruntime f32"] = {"skipped": onnx}
    return results


def pipeline(tagger, source: Path, out: Path, batch: int, runtime="auto") -> tuple[float, int]:
    """(images/s, peak RSS bytes) of the real tagging pipeline on `source` with `runtime`
    (a name, as `gallerytag tag --runtime`, or a RuntimeChoice made beforehand)."""
    from components.tag.pipeline import TagOutputs, run

    with PeakMemory() as memory:
        summary = run(str(source), str(out), tagger, outputs=TagOutputs(shards=4),
                      runtime=runtime)  # fmt: skip
    assert summary.seen == summary.auto + summary.review + summary.rejected
    return summary.images_per_second, memory.peak


def decode_rates(files: list[Path]) -> tuple[float, float]:
    """images/s on one core of (reduced-scale JPEG decode + fit, as the pipeline does; full
    decode + the same fit)."""
    from components.common.images import decode_image, fit_image, load_for_model

    data = [path.read_bytes() for path in files]
    started = time.perf_counter()
    for item in data:
        load_for_model(item, 224)
    draft = len(data) / (time.perf_counter() - started)
    started = time.perf_counter()
    for item in data:
        np.asarray(fit_image(decode_image(item), 224))
    return draft, len(data) / (time.perf_counter() - started)


def hand_loop(tagger, files: list[Path]) -> float:
    """images/s of open -> full decode -> resize -> model.predict, one image at a time."""
    import keras
    from PIL import Image

    model = keras.saving.load_model(tagger.model_file)
    started = time.perf_counter()
    for path in files:
        image = Image.open(path).convert("RGB").resize((224, 224))
        model.predict(np.asarray(image, np.float32)[None], verbose=0)
    return len(files) / (time.perf_counter() - started)


def process_per_image(tagger, files: list[Path]) -> float:
    """images/s of one Python process per image (load TF and the model each time)."""
    started = time.perf_counter()
    for path in files:
        subprocess.run([sys.executable, "-c", ONE_IMAGE_SCRIPT, tagger.model_file, str(path)],
                       check=True, capture_output=True)  # fmt: skip
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    """Run every measurement and print the table."""
    from components.tag.runtime import choose_runtime

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20000, help="large run")
    parser.add_argument("--small", type=int, default=5000, help="small run (memory ratio)")
    parser.add_argument("--batch", type=int, default=64, help="BatchElements max batch size")
    parser.add_argument("--model-images", type=int, default=1024,
                        help="images per model-only round")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="model-only rounds (median)")
    parser.add_argument("--hand-images", type=int, default=300)
    parser.add_argument("--process-images", type=int, default=5)
    parser.add_argument("--decode-images", type=int, default=300)
    parser.add_argument("--workdir", default=str(ROOT / ".cache" / "bench-tag"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    gallery = make_gallery(workdir / "gallery", args.images)
    files = sorted(gallery.glob("*.jpg"))[: args.images]
    tagger = build_tagger(workdir)
    # What `gallerytag tag` picks by default; the IR is exported once and kept in workdir
    # (a registered version carries its own), so the pipeline runs time tagging alone.
    default = choose_runtime(tagger, "auto", "f32", str(workdir / "runtime-cache"))
    print(default.describe(), flush=True)

    small_source = subset(gallery, args.small, workdir / f"first-{args.small}")
    small_rate, small_peak = pipeline(tagger, small_source, workdir / "out-s", args.batch,
                                      default)  # fmt: skip
    large_source = subset(gallery, args.images, workdir / f"first-{args.images}")  # exactly N
    large_rate, large_peak = pipeline(tagger, large_source, workdir / "out-l", args.batch,
                                      default)  # fmt: skip
    keras_rate, _ = pipeline(tagger, small_source, workdir / "out-k", args.batch, "keras")
    hand_rate = hand_loop(tagger, files[: args.hand_images])
    process_rate = process_per_image(tagger, files[: args.process_images])
    draft_rate, full_rate = decode_rates(files[: args.decode_images])
    # Last, as before the runtimes were compared: the launcher forks Beam's workers with no
    # model or runtime threads of its own alive.
    models = model_only(tagger, default.model_file, files, args.batch, args.model_images,
                        workdir, args.rounds)  # fmt: skip

    cores = os.cpu_count() or 1
    exact = {n: r for n, r in models.items() if "rate" in r and "reduced" not in n}
    exact = {n: r for n, r in exact.items() if r["max_dp"] <= 1e-4 and r["top1_agreement"] == 1}
    fastest = max(exact, key=lambda n: exact[n]["rate"])
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{args.images} JPEGs of 1024x768, EfficientNet-Lite0 tagger at 224 px, "
        f"batch <= {args.batch}, {cores} cores, load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; default runtime {default.label}"
    )
    rows = []
    for name, result in models.items():
        if "skipped" in result:
            rows.append((f"model only, {name}", result["skipped"]))
            continue
        rates = "/".join(f"{rate:.0f}" for rate in result["rates"])
        parity = f"max |dp| {result['max_dp']:.1e}, top-1 agree {result['top1_agreement']:.3f}"
        rows.append((f"model only, {name}",
                     f"{result['rate']:.1f} images/s (rounds {rates}), {parity}"))  # fmt: skip
    keras_model = models["keras"]["rate"]
    rows += [
        ("  fastest exact / keras model only", f"{exact[fastest]['rate'] / keras_model:.2f}x"),
        (f"pipeline {default.label} ({args.images} images)", f"{large_rate:.1f} images/s"),
        (f"pipeline {default.label} ({args.small} images)", f"{small_rate:.1f} images/s"),
        (f"pipeline keras, today's ({args.small} images)", f"{keras_rate:.1f} images/s"),
        (f"ratio pipeline / fastest exact model ({fastest}; goal >= 0.85)",
         f"{large_rate / exact[fastest]['rate']:.3f}"),
        ("ratio pipeline / keras model only", f"{large_rate / keras_model:.3f}"),
        (f"ratio pipeline / keras pipeline, {args.small} images (goal >= 1.8)",
         f"{small_rate / keras_rate:.2f}x"),
        (f"hand-written loop ({args.hand_images} images)", f"{hand_rate:.1f} images/s"),
        ("  pipeline speed-up over it", f"{large_rate / hand_rate:.1f}x"),
        (f"one process per image ({args.process_images} images)", f"{process_rate:.2f} images/s"),
        ("  pipeline speed-up over it", f"{large_rate / process_rate:.0f}x"),
        (f"peak RSS at {args.small} images", f"{small_peak / 2**20:.0f} MiB"),
        (f"peak RSS at {args.images} images", f"{large_peak / 2**20:.0f} MiB"),
        ("memory ratio large / small (goal <= 1.2)", f"{large_peak / small_peak:.2f}"),
        ("decode + fit, reduced-scale JPEG, 1 core", f"{draft_rate:.1f} images/s"),
        ("decode + fit, full-size JPEG, 1 core", f"{full_rate:.1f} images/s"),
        (f"  decode share of the pipeline's time on {cores} cores",
         f"{large_rate / (draft_rate * cores):.2f} (full decode: "
         f"{large_rate / (full_rate * cores):.2f})"),
    ]  # fmt: skip
    for name, value in rows:
        print(f"  {name:<62} {value}")


if __name__ == "__main__":
    main()
