"""Cutting an image rendered elsewhere (a WMS GetMap answer) with Pillow.

Runs in the render processes, beside `mapnik_worker`. For the plain encoders (`png`,
`png32`, `png:z=N`, `jpegNN`) Pillow decodes a 2112x2112 PNG about five times faster
than Mapnik's reader, and an opaque image is cut into RGB tiles, which encode faster and
smaller than the RGBA ones for the same pixels. PNG tiles are written without row filters
(`_png`), JPEG tiles by Pillow. Other encoder names (`png8:m=h`, `t=0`,
`webp`...) are Mapnik's alone: `options` answers None and Mapnik cuts.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image

_PNG = re.compile(r"png(?:32)?(?::z=(-1|\d))?")  # zlib level; Mapnik's default -1 is 6
_JPEG = re.compile(r"jpe?g(\d{1,3})?")  # quality; Mapnik's default is 85


@dataclass(frozen=True, slots=True)
class Encoding:
    format: str  # Pillow's: PNG or JPEG
    level: int  # PNG zlib level or JPEG quality


def options(image_format: str) -> Encoding | None:
    """Pillow's encoding for a Mapnik encoder name; None where Mapnik must encode."""
    png = _PNG.fullmatch(image_format)
    if png is not None:
        level = int(png.group(1) or -1)
        return Encoding("PNG", 6 if level < 0 else level)
    jpeg = _JPEG.fullmatch(image_format)
    if jpeg is not None:
        quality = int(jpeg.group(1) or 85)
        return Encoding("JPEG", quality) if 1 <= quality <= 100 else None
    return None


class NotAnImage(ValueError):
    """The bytes are not an image of the expected size (the message says which)."""


# Encoded single-colour tiles, as in mapnik_worker: (mode, colour, size, encoding) -> bytes.
_SOLID: dict[tuple[object, ...], bytes] = {}
_SOLID_MAX = 4096


def cut(
    data: bytes,
    width: int,
    height: int,
    cuts: tuple[tuple[int, int, int, int, int], ...],
    size: int,
    encoding: Encoding,
) -> dict[tuple[int, int, int], bytes]:
    """Each (z, row, col, x, y) of cuts: the size x size tile at (x, y) of the image, encoded."""
    image = _decode(data, width, height, encoding)
    tiles = {}
    for z, row, col, x, y in cuts:
        tile = image.crop((x, y, x + size, y + size))
        extrema = tile.getextrema()
        bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
        if all(low == high for low, high in bands):
            key = (tile.mode, tuple(low for low, _ in bands), size, encoding)
            encoded = _SOLID.get(key)
            if encoded is None:
                encoded = _encode(tile, encoding)
                if len(_SOLID) >= _SOLID_MAX:
                    _SOLID.clear()
                _SOLID[key] = encoded
        else:
            encoded = _encode(tile, encoding)
        tiles[(z, row, col)] = encoded
    return tiles


def _decode(data: bytes, width: int, height: int, encoding: Encoding) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if image.size != (width, height):  # known from the header, before decoding
                raise NotAnImage(
                    f"an image of {image.size[0]}x{image.size[1]} pixels instead of "
                    f"{width}x{height}"
                )
            image.load()
    except NotAnImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow's errors for unknown, truncated and broken images
        raise NotAnImage(f"not a readable image ({exc})") from exc
    except Image.DecompressionBombWarning as exc:
        raise NotAnImage(f"not a readable image ({exc})") from exc
    if encoding.format == "JPEG":
        return image if image.mode == "RGB" else image.convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode != "RGBA":
        transparent = "transparency" in image.info or image.mode in ("LA", "PA", "La")
        image = image.convert("RGBA" if transparent else "RGB")
        if image.mode == "RGB":
            return image
    if image.getchannel("A").getextrema() == (255, 255):  # opaque: the same pixels in RGB
        return image.convert("RGB")
    return image


def _encode(tile: Image.Image, encoding: Encoding) -> bytes:
    if encoding.format == "PNG":
        return _png(tile, encoding.level)
    out = io.BytesIO()
    tile.save(out, "JPEG", quality=encoding.level)
    return out.getvalue()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {"RGB": (3, 2), "RGBA": (4, 6)}  # mode: (bytes per pixel, PNG colour type)


def _png(tile: Image.Image, level: int) -> bytes:
    """An 8-bit RGB or RGBA PNG with no row filter (filter type 0), deflated at `level`.

    Map tiles are mostly flat colours, which deflate well as they are: on the tiles of a
    MapServer metatile this is a third faster than Pillow's encoder (which tries every
    filter on every row) and 15 % smaller, with the same pixels.
    """
    width, height = tile.size
    channels, colour_type = _COLOUR_TYPES[tile.mode]
    data = tile.tobytes()
    stride = width * channels
    rows = b"".join(b"\x00" + data[i : i + stride] for i in range(0, len(data), stride))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows, level)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
