"""Decode untrusted image bytes into RGB pixels, or say exactly why not.

Shared by ingest (training data) and tag (inference) so both judge files the same way.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# We enforce our own pixel limit before decoding; Pillow's global guard would raise a
# different error type (or only warn) and must not decide for us.
Image.MAX_IMAGE_PIXELS = None

ResizeMode = Literal["pad", "crop"]


class ImageRejected(ValueError):
    """An input that is not a usable image; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodeLimits:
    """What an acceptable image looks like before any resizing."""

    min_side: int = 8
    max_pixels: int = 100_000_000  # 100 MP; larger headers are treated as decompression bombs


def content_hash(data: bytes) -> str:
    """Return the SHA-256 hex digest that identifies an image's bytes everywhere."""
    return hashlib.sha256(data).hexdigest()


def decode_image(
    data: bytes,
    limits: DecodeLimits = DecodeLimits(),
    shrink_to: tuple[int, ResizeMode] | None = None,
    keep_short_side: int = 0,
) -> Image.Image:
    """Decode bytes to an upright RGB image, rejecting anything broken or unsafe.

    `shrink_to=(target, mode)` lets JPEG decoding use libjpeg's DCT scaling down to the
    smallest size that still fits `target`: several times faster for large photos. The
    reduced image's short side also stays >= `keep_short_side` (another consumer's input).
    """
    if not data:
        raise ImageRejected("empty_file", "zero bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "content is not a known image format") from None
    except Exception as error:  # Pillow raises many types on corrupt headers
        raise ImageRejected("unreadable_header", str(error)) from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"{width}x{height} exceeds the limit of {limits.max_pixels} pixels",
        )
    if min(width, height) < limits.min_side:
        raise ImageRejected(
            "too_small", f"{width}x{height} is below the minimum side of {limits.min_side}"
        )
    if shrink_to is not None and image.format == "JPEG":
        image.draft("RGB", draft_size_for(image.size, *shrink_to, keep_short_side))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # no copy of an upright image
    except OSError as error:
        reason = "truncated" if "truncated" in str(error).lower() else "corrupt_data"
        raise ImageRejected(reason, str(error)) from None
    except Exception as error:
        raise ImageRejected("corrupt_data", str(error)) from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (CMYK, palette, LA, 16-bit, alpha) to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything to white.
        pixels = np.asarray(image, dtype=np.float64)
        peak = pixels.max() or 1.0
        image = Image.fromarray((pixels * (255.0 / peak)).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Composite transparency onto white: product photos with alpha are meant on white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def draft_size_for(
    size: tuple[int, int], target: int, mode: ResizeMode, keep_short_side: int = 0
) -> tuple[int, int]:
    """The smallest decode size that still resizes to `target` without upsampling loss
    and keeps the short side >= `keep_short_side`."""
    width, height = size
    # Padding fits the long side to the target; cropping fits the short side.
    scale = target / (max(width, height) if mode == "pad" else min(width, height))
    scale = max(scale, keep_short_side / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_image(image: Image.Image, target: int, mode: ResizeMode = "pad") -> Image.Image:
    """Resize to `target`x`target`: keep aspect and pad with black, or centre-crop."""
    # Shrinking averages the source pixels each output pixel covers (BOX, as OpenCV's
    # INTER_AREA): antialiased, and ~30% cheaper than BILINEAR, the costliest step of ingest
    # after decoding. Enlarging small images stays BILINEAR: BOX would upscale blockily.
    shrinking = min(image.size) >= target if mode == "crop" else max(image.size) >= target
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    if mode == "crop":
        return ImageOps.fit(image, (target, target), method)
    return ImageOps.pad(image, (target, target), method, color=(0, 0, 0))


def load_for_model(
    data: bytes, target: int, mode: ResizeMode = "pad", limits: DecodeLimits = DecodeLimits()
) -> np.ndarray:
    """Decode untrusted bytes straight to the model's uint8 input array (reduced-scale JPEG)."""
    fitted = fit_image(decode_image(data, limits, shrink_to=(target, mode)), target, mode)
    return np.asarray(fitted, dtype=np.uint8)


def encode_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    """Encode an RGB image as JPEG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
