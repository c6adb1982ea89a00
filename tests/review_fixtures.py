"""A real review queue, cheaply: a tiny Keras model that tells dark / mid / bright images
apart by their mean pixel, and a real Beam tagging run over grey images with a strict policy
so that (nearly) every row goes to review."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.common import storage
from components.common.tracking import TaggerSpec
from components.tag.pipeline import TagOutputs, TagSummary
from components.tag.pipeline import run as tag
from components.tag.policy import TagPolicy
from tests.conftest import jpeg_bytes

TONES = ["dark", "mid", "bright"]
IN_MEMORY = ["--direct_running_mode=in_memory"]
STRICT = TagPolicy(min_score=0.999, min_margin=0.0)
# Grey levels of the gallery: each gives a different score, so margins (the review order) differ.
LEVELS = (20, 45, 70, 100, 128, 150, 180, 205, 235)


def tone_tagger(folder: Path) -> TaggerSpec:
    """Save the dark / mid / bright model under `folder` and describe it as a tagger."""
    import keras

    inputs = keras.Input((32, 32, 3))
    mean = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    brightness = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(1 / 3))(mean)
    # Linear in brightness b: dark wins below ~0.35, bright above ~0.65, mid between.
    logits = keras.layers.Dense(
        3,
        kernel_initializer=keras.initializers.Constant([[-20.0, 0.0, 20.0]]),
        bias_initializer=keras.initializers.Constant([7.0, 0.0, -13.0]),
    )(brightness)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tones.keras"
    model.save(path)
    return TaggerSpec(str(path), TONES, 32, "pad", False, "models:/tones/1", None, "1")


def grey_jpeg(level: int, seed: int) -> bytes:
    """A square grey JPEG with a little noise (so no two files are equal)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-4, 5, size=(48, 48, 3))
    return jpeg_bytes(np.clip(level + noise, 0, 255).astype(np.uint8))


def write_inbox(prefix: str, levels: tuple[int, ...] = LEVELS) -> list[str]:
    """Grey images under `prefix` (local path or gs://); returns their uris."""
    uris = []
    for index, level in enumerate(levels):
        uri = storage.join(prefix, f"grey_{index:02d}_{level}.jpg")
        storage.write_bytes(uri, grey_jpeg(level, index))
        uris.append(uri)
    return uris


def tag_inbox(source: str, out: str, tagger: TaggerSpec) -> TagSummary:
    """A real tagging run with the strict policy: its review.jsonl is the queue."""
    return tag(source, out, tagger, STRICT, TagOutputs(shards=1), beam_args=IN_MEMORY)
