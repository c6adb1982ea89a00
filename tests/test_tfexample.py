"""Ingest's TensorFlow-free tf.train.Example serialisation is TensorFlow's own format."""

from __future__ import annotations

import subprocess
import sys

import tensorflow as tf

from components.common.tfexample import serialize_example

FEATURES = {
    "image/encoded": b"\xff\xd8 jpeg bytes \x00\xff",
    "image/label": 7,
    "image/content_hash": b"ab" * 32,
    "image/source_uri": "gs://bucket/caf\u00e9 room/1.jpg".encode(),
}


def _tensorflow_example() -> tf.train.Example:
    def feature(value: bytes | int) -> tf.train.Feature:
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(
        features=tf.train.Features(feature={k: feature(v) for k, v in FEATURES.items()})
    )


def test_tensorflow_parses_the_bytes_as_the_same_example() -> None:
    """Message equality after TF parses our bytes, and TF's parse_single_example agrees."""
    data = serialize_example(FEATURES)
    assert tf.train.Example.FromString(data) == _tensorflow_example()
    parsed = tf.io.parse_single_example(
        data,
        {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/label": tf.io.FixedLenFeature([], tf.int64),
            "image/source_uri": tf.io.FixedLenFeature([], tf.string),
        },
    )
    assert parsed["image/encoded"].numpy() == FEATURES["image/encoded"]
    assert int(parsed["image/label"]) == 7
    assert parsed["image/source_uri"].numpy().decode() == "gs://bucket/caf\u00e9 room/1.jpg"


def test_bytes_equal_tensorflows_deterministic_serialisation() -> None:
    """Same bytes as TF writes with deterministic map order, whatever order the dict has."""
    expected = _tensorflow_example().SerializeToString(deterministic=True)
    assert serialize_example(FEATURES) == expected
    assert serialize_example(dict(reversed(FEATURES.items()))) == expected


def test_ingest_pipeline_does_not_import_tensorflow() -> None:
    """The point of the module: Beam workers running ingest never pay TF's import."""
    code = (
        "import sys, components.ingest.pipeline, components.common.tfexample;"
        "sys.exit('tensorflow' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
