"""tf.data input from dataset shards (train, evaluate): shard by rank, decode, augment, batch."""

from __future__ import annotations

import tensorflow as tf

from components.common import dataset

AUTOTUNE = tf.data.AUTOTUNE
FEATURES = {
    dataset.FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
    dataset.FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64),
}


WITH_URI = {**FEATURES, dataset.FEATURE_URI: tf.io.FixedLenFeature([], tf.string)}


def _pixels(example: dict, image_size: int) -> tf.Tensor:
    image = tf.io.decode_jpeg(example[dataset.FEATURE_IMAGE], channels=3)
    return tf.cast(tf.ensure_shape(image, [image_size, image_size, 3]), tf.float32)


def _decode(image_size: int):
    def decode(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(serialized, FEATURES)
        return _pixels(example, image_size), example[dataset.FEATURE_LABEL]

    return decode


def read_in_order(files: list[str], image_size: int, batch_size: int) -> tf.data.Dataset:
    """Batches of {image, label, uri} in file order, read once (evaluation and the gate)."""

    def decode(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        example = tf.io.parse_single_example(serialized, WITH_URI)
        return {
            "image": _pixels(example, image_size),
            "label": example[dataset.FEATURE_LABEL],
            "uri": example[dataset.FEATURE_URI],
        }

    records = tf.data.TFRecordDataset(files)
    return records.map(decode, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(2)


def augmentation(image_size: int):
    """Training augmentation: random resized crop (35-100% of the area, aspect 3:4-4:3),
    horizontal flip, brightness / contrast / saturation jitter. Pixels stay 0..255."""
    whole = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])

    def apply(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image), whole, min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.35, 1.0), use_image_if_no_bounding_boxes=True,
        )  # fmt: skip
        image = tf.image.resize(tf.slice(image, begin, size), (image_size, image_size))
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_brightness(image, max_delta=0.2 * 255.0)
        image = tf.image.random_contrast(image, 0.8, 1.2)
        image = tf.image.random_saturation(image, 0.8, 1.2)
        return tf.clip_by_value(image, 0.0, 255.0), label

    return apply


def make_dataset(
    files: list[str],
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    augment: bool = False,
    cache: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (float32 RGB 0..255 images, int64 labels) for one worker.

    Training data is sharded by worker, shuffled and repeated forever (the loop takes a fixed
    number of steps so all workers stay in lock-step); evaluation data is read once.
    """
    records = tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE)
    records = records.shard(num_shards, shard_index)
    if training and not cache:
        # Shuffle the small encoded records, not decoded pixels: far less memory per slot.
        records = records.shuffle(2048, seed=seed, reshuffle_each_iteration=True).repeat()
    images = records.map(_decode(image_size), num_parallel_calls=AUTOTUNE)
    if cache:
        # Decoded pixels stay in memory: later epochs skip reading and JPEG decoding.
        images = images.cache()
        if training:
            images = images.shuffle(2048, seed=seed, reshuffle_each_iteration=True).repeat()
    if training and augment:
        images = images.map(augmentation(image_size), num_parallel_calls=AUTOTUNE)
    return images.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)
