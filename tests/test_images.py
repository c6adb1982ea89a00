"""Image decoding judges files by content and rejects broken ones with a specific reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from components.common.images import (
    DecodeLimits,
    ImageRejected,
    decode_image,
    draft_size_for,
    fit_image,
    load_for_model,
)
from tests.conftest import jpeg_bytes, pattern_image


def _png_with_header_size(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR claims `width`x`height` (a decompression-bomb header)."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr_data = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr_data
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr_data))
    return bytes(data)


def test_good_jpeg_decodes_to_rgb() -> None:
    """A plain JPEG comes back as RGB with its size."""
    image = decode_image(jpeg_bytes(pattern_image(0, seed=1, size=40)))
    assert image.mode == "RGB" and image.size == (40, 40)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (b"hello, I am text\n", "not_an_image"),
        (jpeg_bytes(pattern_image(0, seed=2))[:1200], "truncated"),
        (jpeg_bytes(pattern_image(0, seed=2))[:100], "unreadable_header"),
        (_png_with_header_size(200_000, 200_000), "too_many_pixels"),
        (jpeg_bytes(np.zeros((4, 4, 3), np.uint8)), "too_small"),
    ],
)  # fmt: skip
def test_bad_inputs_are_rejected_with_reason(data: bytes, reason: str) -> None:
    """Each kind of bad input gets its own reason and never an unexpected exception."""
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, DecodeLimits(min_side=8, max_pixels=50_000_000))
    assert caught.value.reason == reason


def test_modes_become_rgb() -> None:
    """CMYK, palette with transparency and 16-bit greyscale all decode to RGB."""
    for mode, pixel in (("CMYK", (0, 0, 0, 0)), ("P", 3), ("LA", (90, 10)), ("I;16", 40000)):
        buffer = io.BytesIO()
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        Image.new(mode, (20, 12), pixel).save(buffer, format=fmt)
        image = decode_image(buffer.getvalue())
        assert image.mode == "RGB" and image.size == (20, 12), mode


def test_exif_orientation_is_applied() -> None:
    """A landscape JPEG tagged 'rotate 90' comes back portrait."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display
    Image.fromarray(pattern_image(0, seed=4, size=32)[:, :20]).save(
        buffer, format="JPEG", exif=exif
    )
    assert decode_image(buffer.getvalue()).size == (32, 20)


def test_reduced_scale_decode_keeps_enough_pixels() -> None:
    """Draft decoding of a large JPEG never goes below what the target size needs."""
    big = np.tile(pattern_image(1, seed=5, size=64), (16, 24, 1))  # 1024 x 1536
    data = jpeg_bytes(big)
    image = decode_image(data, shrink_to=(224, "pad"))
    assert max(image.size) >= 224 and image.size[0] < 1536
    assert draft_size_for((1536, 1024), 224, "crop") == (336, 224)
    assert draft_size_for((1600, 400), 224, "pad", keep_short_side=64) == (256, 64)
    pixels = load_for_model(data, 224, "pad")
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8


def test_fit_pads_or_crops_to_square() -> None:
    """Both resize modes give the exact target shape."""
    image = Image.fromarray(pattern_image(2, seed=6, size=64)[:, :40])
    assert np.asarray(fit_image(image, 32, "pad")).shape == (32, 32, 3)
    assert np.asarray(fit_image(image, 32, "crop")).shape == (32, 32, 3)


def test_fit_averages_when_shrinking_and_interpolates_when_enlarging() -> None:
    """Shrinking is antialiased (1-px stripes become flat grey) and enlarging is smooth
    (a black/white edge gains intermediate greys, not BOX's nearest-neighbour blocks)."""
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255
    for mode in ("pad", "crop"):
        shrunk = np.asarray(fit_image(Image.fromarray(stripes), 32, mode)).astype(int)
        assert np.all(np.abs(shrunk - 127) <= 2), mode
    edge = np.zeros((4, 4, 3), np.uint8)
    edge[:, 2:] = 255
    for mode in ("pad", "crop"):
        grown = np.asarray(fit_image(Image.fromarray(edge), 32, mode))
        assert np.any((grown > 40) & (grown < 215)), mode
