"""Classification head on a backbone, and which layers train in the fine-tuning phase."""

from __future__ import annotations

import keras

from models.registry import BackboneSpec


def build_classifier(
    backbone: keras.Model, num_classes: int, dropout: float = 0.2, multi_label: bool = False
) -> keras.Model:
    """Backbone -> dropout -> dense: softmax over classes, or per-label sigmoid."""
    inputs = keras.Input(backbone.input_shape[1:], name="pixels")
    features = backbone(inputs)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    activation = "sigmoid" if multi_label else "softmax"
    outputs = keras.layers.Dense(num_classes, activation=activation, name="tags")(features)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_tagger")


HEAD_LAYERS = ("head_dropout", "tags")


def _walk(model: keras.Model):
    """Every layer, descending into nested models (the backbone is one)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def set_trainable_top_blocks(model: keras.Model, spec: BackboneSpec, n_blocks: int) -> None:
    """Freeze the backbone except its top `n_blocks` blocks; BatchNorm stays frozen.

    Frozen BatchNorm layers run in inference mode in Keras 3, so fine-tuning on small
    batches does not wreck the statistics learnt on ImageNet.
    """
    prefixes = spec.top_block_prefixes(n_blocks)
    # Setting a container's flag overwrites its layers' flags, so open containers first.
    for layer in _walk(model):
        if isinstance(layer, keras.Model):
            layer.trainable = True
    for layer in _walk(model):
        if isinstance(layer, keras.Model):
            continue
        if layer.name in HEAD_LAYERS:
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            layer.trainable = bool(prefixes) and layer.name.startswith(prefixes)
