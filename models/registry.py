"""Backbone registry: name -> how to build a pretrained feature extractor (pooled features).

Every backbone takes RGB pixels 0..255 and carries its own normalisation, so data pipelines
never need to know which network they feed. `efficientnet_lite0/1/2` load offline; the
keras.applications ones take weights="imagenet" (downloaded) or a local weights file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import keras

from models.efficientnet_lite import VARIANTS, LiteVariant, efficientnet_lite


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and which of its layers form its top blocks."""

    name: str
    build: Callable[[int, str | None], keras.Model]
    default_input_size: int
    offline_weights: bool
    block_prefixes: tuple[str, ...]  # layer-name prefixes of the blocks, bottom to top
    head_prefixes: tuple[str, ...] = ()  # layers above the last block (always unfrozen)

    def top_block_prefixes(self, n_blocks: int) -> tuple[str, ...]:
        """Layer-name prefixes of the top `n_blocks` blocks plus the head layers."""
        top = self.block_prefixes[-n_blocks:] if n_blocks > 0 else ()
        return top + self.head_prefixes


def _keras_application(
    constructor: Callable[..., keras.Model], preprocess: Callable
) -> Callable[[int, str | None], keras.Model]:
    def build(input_size: int, weights: str | None) -> keras.Model:
        local = weights not in (None, "imagenet")
        if local and not Path(str(weights)).exists():
            raise FileNotFoundError(f"backbone weights file {weights} does not exist")
        base = constructor(
            include_top=False,
            weights=None if local else weights,
            input_shape=(input_size, input_size, 3),
            pooling="avg",
        )
        if local:
            base.load_weights(str(weights))
        inputs = keras.Input((input_size, input_size, 3), name="pixels")
        # The application's own preprocessing, inside the model: callers feed raw pixels.
        return keras.Model(inputs, base(preprocess(inputs)), name=base.name)

    return build


def _lite_spec(variant: LiteVariant) -> BackboneSpec:
    """A registry entry for an EfficientNet-Lite size: its blocks are the `block_{i}_` layers."""

    def build(input_size: int, weights: str | None) -> keras.Model:
        return efficientnet_lite(variant.name, input_size, weights)

    return BackboneSpec(
        variant.name,
        build,
        variant.input_size,
        offline_weights=True,
        # The trailing underscore keeps block_1_ from also matching block_10_ .. block_19_.
        block_prefixes=tuple(f"block_{i}_" for i in range(variant.num_blocks)),
        head_prefixes=("head_",),
    )


def _scale_to_unit_range(x):  # MobileNetV2 / InceptionV3: [-1, 1]
    return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(x)


def _identity(x):  # EfficientNetB0 normalises inside the application
    return x


def _application_spec(
    name: str, application: Callable, preprocess: Callable, size: int, blocks: Iterable[str]
) -> BackboneSpec:
    """A keras.applications backbone (no offline weights: downloaded by Keras when asked)."""
    head = {"mobilenet_v2": ("Conv_1",), "efficientnet_b0": ("top_",)}.get(name, ())
    return BackboneSpec(
        name,
        _keras_application(application, preprocess),
        size,
        offline_weights=False,
        block_prefixes=tuple(blocks),
        head_prefixes=head,
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        *(_lite_spec(variant) for variant in VARIANTS.values()),
        _application_spec(
            "mobilenet_v2",
            keras.applications.MobileNetV2,
            _scale_to_unit_range,
            224,
            (f"block_{i}_" for i in range(1, 17)),
        ),
        _application_spec(
            "efficientnet_b0",
            keras.applications.EfficientNetB0,
            _identity,
            224,
            (f"block{i}" for i in range(1, 8)),
        ),
        _application_spec(
            "inception_v3",
            keras.applications.InceptionV3,
            _scale_to_unit_range,
            299,
            (f"mixed{i}" for i in range(11)),
        ),
    )
}


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for `name`, or a ValueError listing the known backbones."""
    if name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}"
        )
    return BACKBONES[name]


def build_backbone(
    name: str, input_size: int | None = None, weights: str | None = "imagenet"
) -> keras.Model:
    """A feature extractor (pooled features) for raw 0..255 RGB input."""
    spec = get_spec(name)
    return spec.build(input_size or spec.default_input_size, weights)
