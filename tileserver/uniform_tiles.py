"""Uniform tiles (one colour over every pixel): colours as the configuration writes them,
and what a TileCloud-chain `empty_tile_detection` hash is the image of.

TileCloud-chain recognises empty tiles by the size and SHA-1 of their bytes, which only
the encoder that computed them reproduces: tileserver's encoders (another zlib level,
another JPEG quality) write other bytes for the same pixels. So an empty tile is also
recognised by its colour, from its pixels when it is rendered (`color:` in
`empty_tile_detection`), and a TileCloud-chain hash is looked up among the uniform tiles
common encoders write (transparent, white or black, PNG at every zlib level, JPEG at every
quality): found, its colour is used. Pure functions; Pillow only to encode and decode.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zlib
from collections.abc import Iterator
from functools import lru_cache

Colour = tuple[int, int, int, int]  # red, green, blue, alpha (straight, not premultiplied)

TRANSPARENT: Colour = (0, 0, 0, 0)
_HEX = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
# The colours of the empty tiles people hash: nothing (transparent), paper white, black.
_CANDIDATES: tuple[Colour, ...] = (TRANSPARENT, (255, 255, 255, 255), (0, 0, 0, 255),
                                   (255, 255, 255, 0))  # fmt: skip


def parse_colour(text: str) -> Colour:
    """'transparent', '#rgb', '#rrggbb' or '#rrggbbaa'; ValueError otherwise."""
    if text.strip().lower() == "transparent":
        return TRANSPARENT
    match = _HEX.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected 'transparent' or '#rrggbb[aa]', got {text!r}")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    values = [int(digits[i : i + 2], 16) for i in range(0, len(digits), 2)]
    return (values[0], values[1], values[2], values[3] if len(values) == 4 else 255)


def format_colour(colour: Colour) -> str:
    if colour[3] == 0:
        return "transparent"
    text = "#" + "".join(f"{v:02x}" for v in colour[:3])
    return text if colour[3] == 255 else text + f"{colour[3]:02x}"


def same_colour(found: Colour, wanted: Colour) -> bool:
    """Transparent is transparent whatever its red, green and blue."""
    return found[3] == wanted[3] == 0 or found == wanted


def uniform_colour(data: bytes) -> Colour | None:
    """The colour of an encoded tile all of one colour, None for any other tile (or bytes
    that are no image)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            rgba = image.convert("RGBA")
    except (OSError, SyntaxError, ValueError):
        return None
    bands: list[tuple[int, int]] = list(rgba.getextrema())  # type: ignore[arg-type]
    if bands[3] == (0, 0):
        return TRANSPARENT
    if all(low == high for low, high in bands):
        red, green, blue, alpha = (low for low, _ in bands)
        return (red, green, blue, alpha)
    return None


def _png(colour: Colour, mode: str, size: int, level: int) -> bytes:
    """A uniform PNG as Mapnik and tileserver write them: 8 bits, no row filter."""
    pixel = bytes(colour[: len(mode)])
    rows = (b"\x00" + pixel * size) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 6 if mode == "RGBA" else 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    return b"".join((b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header),
                     chunk(b"IDAT", zlib.compress(rows, level)), chunk(b"IEND", b"")))  # fmt: skip


def _candidates(size: int, image_format: str) -> Iterator[tuple[bytes, Colour, str]]:
    """Uniform tiles of the usual empty colours, as common encoders write them."""
    from PIL import Image

    for colour in _CANDIDATES:
        modes = ("RGBA", "RGB") if colour[3] == 255 else ("RGBA",)
        for mode in modes:
            image = Image.new(mode, (size, size), colour[: len(mode)])
            if image_format == "png":
                for level in range(10):
                    yield _png(colour, mode, size, level), colour, f"PNG, zlib level {level}"
                    out = io.BytesIO()
                    image.save(out, "PNG", compress_level=level)
                    yield out.getvalue(), colour, f"PNG (Pillow's), zlib level {level}"
            elif mode == "RGB":
                for quality in range(1, 101):
                    out = io.BytesIO()
                    image.save(out, "JPEG", quality=quality)
                    yield out.getvalue(), colour, f"JPEG, quality {quality}"


@lru_cache(maxsize=64)
def identify(size: int, sha1: str, tile_size: int, image_format: str) -> tuple[Colour, str] | None:
    """The colour of the uniform tile_size x tile_size tile whose bytes have this size and
    SHA-1, and how it was encoded; None when it is none of the common ones. image_format:
    'png' or 'jpeg'."""
    wanted = sha1.lower()
    for data, colour, encoder in _candidates(tile_size, image_format):
        if len(data) == size and hashlib.sha1(data).hexdigest() == wanted:
            return colour, encoder
    return None
