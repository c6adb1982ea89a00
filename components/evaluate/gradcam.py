"""Grad-CAM (Selvaraju et al. 2017) for taggers built as backbone -> pooling -> head: which
parts of an image pushed the model towards a class. Keras adapter; the maths is in `_cam`."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _conv_features(backbone: keras.Model):
    """(function pixels -> last feature map, the pooling layer after it), descending into a
    nested base model (keras.applications backbones wrap one)."""
    last = backbone.layers[-1]
    if isinstance(last, keras.layers.GlobalAveragePooling2D):
        return keras.Model(backbone.inputs, last.input), last
    if isinstance(last, keras.Model):
        inner, pool = _conv_features(last)
        feed = keras.Model(backbone.inputs, backbone.layers[-2].output)
        return (lambda x: inner(feed(x))), pool
    raise ValueError(
        f"Grad-CAM needs a backbone ending in global average pooling; {backbone.name} ends "
        f"in {type(last).__name__}"
    )


def _split_tagger(model: keras.Model):
    """The tagger as feature map function, pooling layer and the head layers after it."""
    nested = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.Model)]
    if not nested:
        raise ValueError(f"{model.name} has no backbone sub-model to explain")
    features, pool = _conv_features(model.layers[nested[0]])
    return features, pool, model.layers[nested[0] + 1 :]


def _cam(feature_maps: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Channel weights = spatial mean of the gradients; map = ReLU(weighted sum), max 1."""
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    cams = np.maximum((feature_maps * weights).sum(axis=-1), 0.0)
    peaks = cams.max(axis=(1, 2), keepdims=True)
    return np.divide(cams, peaks, out=np.zeros_like(cams), where=peaks > 0)


def grad_cam(model: keras.Model, images: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Heat maps in [0, 1] at the images' resolution, one per image, for the given classes."""
    features, pool, head = _split_tagger(model)
    pixels = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        maps = features(pixels)
        tape.watch(maps)
        scores = pool(maps)
        for layer in head:
            scores = layer(scores, training=False)
        chosen = tf.gather(scores, tf.convert_to_tensor(class_ids), axis=1, batch_dims=1)
    gradients = tape.gradient(chosen, maps)
    cams = _cam(np.asarray(maps), np.asarray(gradients))
    size = images.shape[1:3]
    return tf.image.resize(cams[..., None], size, method="bilinear").numpy()[..., 0]


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the heat map blended on top (jet colours), uint8 RGB."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blended, 0, 255).astype(np.uint8)
