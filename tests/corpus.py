"""A malformed-image corpus for tests: the kinds of files real galleries contain.

`write_malformed_corpus(folder)` writes them and returns file name -> expected rejection
reason (None: the file must be accepted).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import jpeg_bytes, pattern_image


def _photo(seed: int, size: int = 64) -> np.ndarray:
    return pattern_image(seed % 3, seed=seed, size=size)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny valid PNG whose header claims a gigantic size (a decompression bomb)."""
    data = bytearray(_encode(Image.new("RGB", (4, 4)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def exif_rotated_jpeg() -> bytes:
    """A 48x32 (landscape) JPEG tagged 'rotate 90 CW': decoders must show it 32x48."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(Image.fromarray(_photo(5)[:32, :48]), "JPEG", exif=exif)


def write_malformed_corpus(folder: Path) -> dict[str, str | None]:
    """Write the corpus into `folder`; return name -> expected reason (None = accepted)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(_photo(1, 128))
    noisy = jpeg_bytes(np.random.default_rng(3).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    palette = Image.fromarray(_photo(2)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    gif_frames = [Image.fromarray(_photo(seed)).convert("P") for seed in (6, 7)]
    gif = io.BytesIO()
    gif_frames[0].save(gif, format="GIF", save_all=True, append_images=gif_frames[1:])
    files: dict[str, tuple[bytes, str | None]] = {
        "truncated.jpg": (noisy[: len(noisy) // 2], "truncated"),
        "zero-byte.jpg": (b"", "empty_file"),
        "text-named.jpg": (b"hello, I am a text file\n", "not_an_image"),
        "page.jpeg": (b"<!doctype html><html><body>404</body></html>", "not_an_image"),
        "header-only.jpg": (good[:60], "unreadable_header"),
        "bomb.png": (bomb_png(), "too_many_pixels"),
        "tiny.png": (_encode(Image.new("RGB", (4, 4), (9, 9, 9)), "PNG"), "too_small"),
        "cmyk.jpg": (_encode(Image.fromarray(_photo(8)).convert("CMYK"), "JPEG"), None),
        "sixteen-bit.png": (
            _encode(Image.fromarray(_photo(9)[..., 0].astype(np.uint16) * 257), "PNG"),
            None,
        ),
        "palette-alpha.png": (_encode(palette, "PNG"), None),
        "exif-rotated.jpg": (exif_rotated_jpeg(), None),
        "png-named.jpg": (_encode(Image.fromarray(_photo(10)), "PNG"), None),
        "jpeg-named.png": (jpeg_bytes(_photo(11)), None),
        "café au lait 🍰.jpg": (jpeg_bytes(_photo(12)), None),
        "animated.gif": (gif.getvalue(), None),
        "photo.webp": (_encode(Image.fromarray(_photo(13)), "WEBP"), None),
        "photo.bmp": (_encode(Image.fromarray(_photo(14)), "BMP"), None),
        "photo.tiff": (_encode(Image.fromarray(_photo(15)), "TIFF"), None),
        "grey.jpg": (_encode(Image.fromarray(_photo(16)[..., 0], "L"), "JPEG"), None),
        "trailing-garbage.jpg": (jpeg_bytes(_photo(17)) + b"\x00garbage" * 50, None),
        "la-alpha.png": (_encode(Image.fromarray(_photo(18)).convert("LA"), "PNG"), None),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}
