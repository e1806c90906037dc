"""Whether a layer's `empty_tile_detection` size and hash can match the bytes this server
writes: they only match where the same encoder wrote them (TileCloud-chain's hashes come
from its own). Encodes uniform tiles with the render processes' own code (`cut_image` for
a WMS answer, `pillow_cut.cut_pixels` for Mapnik's pixels, Mapnik's encoder for the
formats only it writes), so it runs where Mapnik is importable: check-config,
generate_tiles.

The size of an encoded uniform tile depends on its colour's bit pattern, in a few tight
clusters (zlib and JPEG alike): a size far from every one of them, over a spread of
colours, is the size of no uniform tile this server writes.
"""

from __future__ import annotations

import io
import random
from functools import lru_cache

from tileserver.adapters import pillow_cut
from tileserver.adapters.mapnik_worker import CutJob, cut_image
from tileserver.config import Layer
from tileserver.uniform_tiles import Colour, format_colour

# Nothing, white, black, map-like colours, half transparency, low values, and a fixed
# spread of others: every bit pattern's cluster of sizes.
_SPREAD = random.Random(13)
_COLOURS: tuple[Colour, ...] = (
    (0, 0, 0, 0), (255, 255, 255, 255), (0, 0, 0, 255), (170, 211, 223, 255),
    (242, 239, 233, 255), (12, 200, 77, 255), (255, 0, 0, 128), (1, 2, 3, 4),
    (7, 7, 7, 255), (255, 255, 255, 0),
    *((_SPREAD.randrange(256), _SPREAD.randrange(256), _SPREAD.randrange(256),
       _SPREAD.choice((255, 255, 128, 0))) for _ in range(48)),
)  # fmt: skip
# How far from every size seen a size is impossible: the clusters are a few bytes wide.
_NEAR = 0.03


@lru_cache(maxsize=32)
def uniform_tile_sizes(image_format: str, tile_size: int) -> tuple[int, ...]:
    """The byte sizes of uniform tile_size² tiles encoded with image_format (a layer's
    output_format) by the render processes, from an RGB or RGBA image, over colours of
    every kind; sorted, without repeats."""
    from PIL import Image

    sizes = set()
    cuts = ((0, 0, 0, 0, 0),)
    encoding = pillow_cut.options(image_format)
    for colour in _COLOURS:
        for mode in ("RGBA", "RGB") if colour[3] == 255 else ("RGBA",):
            out = io.BytesIO()
            Image.new(mode, (tile_size, tile_size), colour[: len(mode)]).save(out, "PNG")
            job = CutJob(out.getvalue(), tile_size, tile_size, tile_size, cuts, image_format)
            sizes.add(len(cut_image(job).tiles[(0, 0, 0)]))
        if encoding is not None:  # Mapnik's pixels, cut as RGBA
            pixels = bytes(colour) * tile_size * tile_size
            tile = pillow_cut.cut_pixels(pixels, tile_size, tile_size, cuts, tile_size, encoding)
            sizes.add(len(tile[(0, 0, 0)]))
        else:
            sizes.add(len(_mapnik_uniform(colour, tile_size, image_format)))
    return tuple(sorted(sizes))


def _mapnik_uniform(colour: Colour, size: int, image_format: str) -> bytes:
    import mapnik

    image = mapnik.Image(size, size)
    image.fill(mapnik.Color(*colour))
    data: bytes = image.to_string(image_format)
    return data


def never_matches(layer: Layer) -> str | None:
    """Why the layer's empty_tile_detection size and hash never match a tile this server
    writes (no uniform tile of its format has about that size), None when they may. A
    layer whose detection has a colour is left alone: its empty tiles are found by their
    pixels."""
    detection = layer.empty_tile_detection
    if detection is None or detection.size is None or detection.color is not None:
        return None
    tile_size = layer.grid.tile_size
    sizes = uniform_tile_sizes(layer.output_format, tile_size)
    if any(abs(detection.size - size) <= size * _NEAR for size in sizes):
        return None
    return (
        f"layers.{layer.name}.empty_tile_detection: no tile of one colour this server encodes "
        f"for the layer ({layer.output_format}, {tile_size}x{tile_size}) is {detection.size} "
        f"bytes (they are {sizes[0]} to {sizes[-1]} bytes, in a few sizes): this hash, from "
        "another encoder, never matches, and empty tiles are stored. Add `color:` with the "
        f"empty tiles' colour (e.g. '{format_colour((0, 0, 0, 0))}'; `generate_tiles "
        "--get-hash Z/X/Y` prints it): a tile all of it is empty whatever its bytes"
    )
