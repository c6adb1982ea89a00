"""Grad-CAM (Selvaraju et al. 2017) for taggers built as backbone -> pooling -> head: which
parts of an image pushed the model towards a class. Keras adapter; the maths is in `_cam`.

The final feature map of a 224 px EfficientNet-Lite0 is 7x7 (3x3 at 96 px): one cell covers
a seventh of the image, so maps were coarse and often on the background. The explained map
is one downsampling earlier (`explained_layer`), 4x the cells."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def explained_layer(features: keras.Model, block_prefixes: tuple[str, ...]) -> str | None:
    """The layer whose map Grad-CAM explains: the deepest block output (last layer of a block,
    blocks named by `block_prefixes`, bottom to top) at least twice as wide as the final
    feature map, i.e. one downsampling earlier (EfficientNet-Lite0 at 224 px: block 10,
    14x14, instead of the final 7x7). None (the final map) when no block qualifies."""
    final = features.layers[-1].input.shape[1]
    chosen = None
    for prefix in block_prefixes:
        members = [layer for layer in features.layers if layer.name.startswith(prefix)]
        if not members:
            continue
        shape = members[-1].output.shape
        if len(shape) == 4 and shape[1] is not None and final and shape[1] >= 2 * final:
            chosen = members[-1].name
    return chosen


def _conv_features(backbone: keras.Model, block_prefixes: tuple[str, ...]):
    """(function pixels -> (explained map, last feature map), the pooling layer after it,
    the explained layer's name or None), descending into a nested base model
    (keras.applications backbones wrap one)."""
    last = backbone.layers[-1]
    if isinstance(last, keras.layers.GlobalAveragePooling2D):
        name = explained_layer(backbone, block_prefixes)
        if name is None:
            final = keras.Model(backbone.inputs, last.input)
            return (lambda x: (lambda m: (m, m))(final(x))), last, None
        both = keras.Model(backbone.inputs, [backbone.get_layer(name).output, last.input])
        return (lambda x: tuple(both(x))), last, name
    if isinstance(last, keras.Model):
        inner, pool, name = _conv_features(last, block_prefixes)
        feed = keras.Model(backbone.inputs, backbone.layers[-2].output)
        return (lambda x: inner(feed(x))), pool, name
    raise ValueError(
        f"Grad-CAM needs a backbone ending in global average pooling; {backbone.name} ends "
        f"in {type(last).__name__}"
    )


def _split_tagger(model: keras.Model, block_prefixes: tuple[str, ...]):
    """The tagger as feature map function, pooling layer, the head layers after it and the
    explained layer's name."""
    nested = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.Model)]
    if not nested:
        raise ValueError(f"{model.name} has no backbone sub-model to explain")
    features, pool, name = _conv_features(model.layers[nested[0]], block_prefixes)
    return features, pool, model.layers[nested[0] + 1 :], name


def _cam(feature_maps: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Channel weights = spatial mean of the gradients; map = ReLU(weighted sum), max 1."""
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    cams = np.maximum((feature_maps * weights).sum(axis=-1), 0.0)
    peaks = cams.max(axis=(1, 2), keepdims=True)
    return np.divide(cams, peaks, out=np.zeros_like(cams), where=peaks > 0)


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    class_ids: np.ndarray,
    block_prefixes: tuple[str, ...] = (),
) -> np.ndarray:
    """Heat maps in [0, 1] at the images' resolution, one per image, for the given classes,
    from the map `explained_layer` picks (the final feature map without block names)."""
    return grad_cam_with_layer(model, images, class_ids, block_prefixes)[0]


def grad_cam_with_layer(
    model: keras.Model,
    images: np.ndarray,
    class_ids: np.ndarray,
    block_prefixes: tuple[str, ...] = (),
) -> tuple[np.ndarray, str, tuple[int, int]]:
    """`grad_cam`'s heat maps, the explained layer's name ("final feature map" when none was
    picked) and its map's height and width."""
    features, pool, head, name = _split_tagger(model, block_prefixes)
    pixels = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        explained, maps = features(pixels)
        tape.watch(explained)
        scores = pool(maps)
        for layer in head:
            scores = layer(scores, training=False)
        chosen = tf.gather(scores, tf.convert_to_tensor(class_ids), axis=1, batch_dims=1)
    gradients = tape.gradient(chosen, explained)
    cams = _cam(np.asarray(explained), np.asarray(gradients))
    size = images.shape[1:3]
    heat = tf.image.resize(cams[..., None], size, method="bilinear").numpy()[..., 0]
    return heat, name or "final feature map", tuple(cams.shape[1:3])


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the heat map blended on top (jet colours), uint8 RGB."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blended, 0, 255).astype(np.uint8)
