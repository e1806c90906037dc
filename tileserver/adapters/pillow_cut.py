"""Cutting a metatile's pixels into encoded tiles with Pillow, in the render processes.

Both paths come here: an image rendered elsewhere (a WMS GetMap answer, `cut`, or
`cut_pieces` as it arrives): for PNG tiles, its rows as they are when it has no row
filter (MapServer's PNGs: `plain_cut`), else decoded by Pillow, about five times faster
than Mapnik's reader for a 2112x2112 PNG;
and Mapnik's own rendering (`cut_pixels`, from `mapnik_worker`), its raw RGBA pixels, cut
into RGBA tiles as Mapnik's own encoder writes them. For the plain encoders (`png`,
`png32`, `png:z=N`, `jpegNN`) opaque WMS tiles are RGB (the same pixels, less to deflate),
PNG tiles are written by `png_encoder` (no row filter, ISA-L's deflate), JPEG tiles
by Pillow. Other encoder names (`png8:m=h`, `t=0`, `webp`...) are Mapnik's alone:
`options` answers None and Mapnik cuts.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection
from typing import Protocol

from PIL import Image

from tileserver.adapters import plain_cut, png_decoder, png_encoder
from tileserver.adapters.plain_cut import Cut, FirstDone, Uniform, inside, keep_solid, rgba, solid
from tileserver.adapters.tile_encodings import Encoding, options
from tileserver.grid import Metatile
from tileserver.types import TileCoord


class NotAnImage(ValueError):
    """The bytes are not an image of the expected size (the message says which)."""


__all__ = [
    "Cut", "Encoding", "FirstDone", "Uniform", "cut", "cut_pieces", "cut_pixels",
    "metatile_cuts", "options",
]  # fmt: skip


def metatile_cuts(
    metatile: Metatile, only: Collection[TileCoord] | None = None, first: TileCoord | None = None
) -> tuple[Cut, ...]:
    """Where each tile (of `only`, when given) lies in the metatile's image: (z, row, col, x, y);
    `first`, when among them, comes first."""
    cuts = [
        (t.coord.z, t.coord.row, t.coord.col, t.x, t.y)
        for t in metatile.tiles
        if only is None or t.coord in only
    ]
    if first is not None:
        cuts.sort(key=lambda c: (c[0], c[1], c[2]) != (first.z, first.row, first.col))
    return tuple(cuts)


def cut(
    data: bytes,
    width: int,
    height: int,
    cuts: tuple[Cut, ...],
    size: int,
    encoding: Encoding,
    uniform: Uniform | None = None,
    first_done: FirstDone | None = None,
) -> dict[tuple[int, int, int], bytes]:
    """Each (z, row, col, x, y) of cuts: the size x size tile at (x, y) of the image,
    encoded; the colour (RGBA) of those all of one colour goes in `uniform`; `first_done`
    gets the first tile as soon as it is encoded, before the others."""
    if encoding.format == "PNG":
        plain = plain_cut.PlainCut(width, height, cuts, size, encoding.level, uniform, first_done)
        try:
            plain.feed(data)
            return plain.finish()
        except plain_cut.SizeMismatch as exc:
            raise NotAnImage(str(exc)) from exc
        except png_decoder.NotPlain:
            # Not as MapServer writes them (a palette, a filtered row...), or broken: Pillow
            # decodes it or says what is wrong. A first tile sent was whole and right.
            first_done = None if plain.first_sent else first_done
    return _cut(_decode(data, width, height, encoding), cuts, size, encoding, uniform, first_done)


class Pieces(Protocol):
    """An image read piece by piece as it arrives (image_feed.FeedReader)."""

    def ready(self) -> bool:
        """True when a piece (or the end) can be read without waiting."""
        ...

    def read(self) -> bytes | bytearray | None:
        """The next piece; None at the end."""
        ...

    def rest(self) -> list[bytearray]:
        """The pieces not read yet, to the end."""
        ...


def cut_pieces(
    pieces: Pieces,
    width: int,
    height: int,
    cuts: tuple[Cut, ...],
    size: int,
    encoding: Encoding,
    uniform: Uniform | None = None,
    first_done: FirstDone | None = None,
) -> dict[tuple[int, int, int], bytes]:
    """As `cut`, for an image read piece by piece as it arrives: a plain PNG is cut as it
    comes, and the tiles already whole are encoded while the next piece is awaited (the
    first tile as soon as it is whole)."""
    read: list[bytes | bytearray] = []
    if encoding.format == "PNG":
        plain = plain_cut.PlainCut(
            width, height, cuts, size, encoding.level, uniform, first_done, eager=False
        )
        try:
            while True:
                while plain.has_ready and not pieces.ready():
                    plain.encode_one()
                piece = pieces.read()
                if piece is None:
                    return plain.finish()
                read.append(piece)
                plain.feed(piece)
        except plain_cut.SizeMismatch as exc:
            raise NotAnImage(str(exc)) from exc
        except png_decoder.NotPlain:
            first_done = None if plain.first_sent else first_done  # as in `cut`
    read.extend(pieces.rest())
    return cut(b"".join(read), width, height, cuts, size, encoding, uniform, first_done)


def cut_pixels(
    pixels: bytes,
    width: int,
    height: int,
    cuts: tuple[Cut, ...],
    size: int,
    encoding: Encoding,
    uniform: Uniform | None = None,
    first_done: FirstDone | None = None,
) -> dict[tuple[int, int, int], bytes]:
    """As `cut`, for raw 8-bit RGBA pixels (straight alpha, rows top to bottom), as Mapnik
    renders them. PNG tiles stay RGBA, as Mapnik's own encoder writes them: the rows are
    sliced out of `pixels` as they are, with no copy of the image."""
    if len(pixels) != width * height * 4:
        raise ValueError(f"{len(pixels)} bytes for {width}x{height} RGBA pixels")
    if encoding.format == "PNG":
        return _cut_png(pixels, width, height, "RGBA", cuts, size, encoding, uniform, first_done)
    image = Image.frombuffer("RGBA", (width, height), pixels, "raw", "RGBA", 0, 1)
    return _cut(_plain(image, encoding), cuts, size, encoding, uniform, first_done)


def _cut(
    image: Image.Image,
    cuts: tuple[Cut, ...],
    size: int,
    encoding: Encoding,
    uniform: Uniform | None = None,
    first_done: FirstDone | None = None,
) -> dict[tuple[int, int, int], bytes]:
    if encoding.format == "PNG":
        return _cut_png(
            image.tobytes(), image.width, image.height, image.mode, cuts, size, encoding,
            uniform, first_done,
        )  # fmt: skip
    tiles = {}  # JPEG
    for z, row, col, x, y in cuts:
        tile = image.crop((x, y, x + size, y + size))
        extrema = tile.getextrema()
        bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
        if all(low == high for low, high in bands):
            if uniform is not None:
                uniform[(z, row, col)] = rgba(bytes(int(low) for low, _ in bands))
            key = (tile.mode, tuple(low for low, _ in bands), size, encoding)
            encoded = solid(key)
            if encoded is None:
                encoded = _jpeg(tile, encoding)
                keep_solid(key, encoded)
        else:
            encoded = _jpeg(tile, encoding)
        tiles[(z, row, col)] = encoded
        if first_done is not None:
            first_done(encoded)
            first_done = None
    return tiles


def _cut_png(
    pixels: bytes,
    width: int,
    height: int,
    mode: str,
    cuts: tuple[Cut, ...],
    size: int,
    encoding: Encoding,
    uniform: Uniform | None = None,
    first_done: FirstDone | None = None,
) -> dict[tuple[int, int, int], bytes]:
    """PNG tiles from the rows of the image's `pixels` (`mode` RGB or RGBA), sliced out of
    them (no crop, no copy of the image per tile); a tile whose rows are all one repeated
    pixel is a single colour, encoded once (and its colour goes in `uniform`)."""
    channels = len(mode)
    line = width * channels
    length = size * channels
    tiles = {}
    for z, row, col, x, y in cuts:
        inside(x, y, size, width, height)
        start = y * line + x * channels
        rows = [pixels[i : i + length] for i in range(start, start + size * line, line)]
        encoded = tiles[(z, row, col)] = _png_tile(rows, mode, (z, row, col), uniform, encoding)
        if first_done is not None:
            first_done(encoded)
            first_done = None
    return tiles


def _png_tile(
    rows: list[bytes],
    mode: str,
    coord: tuple[int, int, int],
    uniform: Uniform | None,
    encoding: Encoding,
) -> bytes:
    """A PNG tile of `rows`; one whose rows are all one repeated pixel is a single colour,
    encoded once (and its colour goes in `uniform`)."""
    size = len(rows)
    channels = len(mode)
    first = rows[0]
    pixel = first[:channels]
    if first == pixel * size and rows.count(first) == size:
        if uniform is not None:
            uniform[coord] = rgba(pixel)
        key = (mode, pixel, size, encoding.level)  # plain_cut's key
        encoded = solid(key)
        if encoded is None:
            encoded = png_encoder.encode_rows(rows, mode, encoding.level)
            keep_solid(key, encoded)
        return encoded
    return png_encoder.encode_rows(rows, mode, encoding.level)


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
    return _plain(image, encoding)


def _plain(image: Image.Image, encoding: Encoding) -> Image.Image:
    """The image in the mode its tiles are encoded in: RGB for JPEG, and for PNG RGB when
    every pixel is opaque, else RGBA."""
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


def _jpeg(tile: Image.Image, encoding: Encoding) -> bytes:
    out = io.BytesIO()
    tile.save(out, "JPEG", quality=encoding.level)
    return out.getvalue()
