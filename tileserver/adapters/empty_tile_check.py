"""Whether a layer's `empty_tile_detection` size and hash can match the bytes this server
writes: they only match where the same encoder wrote them (TileCloud-chain's hashes come
from its own). Encodes uniform tiles with the render processes' own code (`cut_image`,
and Mapnik's encoder), so it runs where Mapnik is importable: check-config, generate_tiles.
"""

from __future__ import annotations

import io
from functools import lru_cache

from tileserver.adapters.mapnik_worker import CutJob, cut_image
from tileserver.config import Layer
from tileserver.uniform_tiles import Colour, format_colour

# Colours whose uniform tiles span the sizes an encoder writes for one colour: nothing,
# white, black, map-like colours, half transparency, and low values (other bit patterns).
_COLOURS: tuple[Colour, ...] = (
    (0, 0, 0, 0), (255, 255, 255, 255), (0, 0, 0, 255), (170, 211, 223, 255),
    (242, 239, 233, 255), (12, 200, 77, 255), (255, 0, 0, 128), (1, 2, 3, 4),
)  # fmt: skip
# A uniform tile is never smaller than the black (all-zero) one of the same encoder, which
# is among the colours: below the smallest size, none is. Above the largest, some colour not
# tried might be a little larger: only a size beyond it by this fraction is impossible.
_ABOVE = 0.25


@lru_cache(maxsize=32)
def uniform_tile_sizes(image_format: str, tile_size: int) -> tuple[int, int]:
    """The smallest and largest byte size of a uniform tile_size² tile encoded with
    image_format (a layer's output_format) by the render processes, from an RGB or RGBA
    image, over colours of every kind."""
    from PIL import Image

    sizes = []
    cuts = ((0, 0, 0, 0, 0),)
    for colour in _COLOURS:
        for mode in ("RGBA", "RGB") if colour[3] == 255 else ("RGBA",):
            out = io.BytesIO()
            Image.new(mode, (tile_size, tile_size), colour[: len(mode)]).save(out, "PNG")
            job = CutJob(out.getvalue(), tile_size, tile_size, tile_size, cuts, image_format)
            sizes.append(len(cut_image(job).tiles[(0, 0, 0)]))
        sizes.append(len(_mapnik_uniform(colour, tile_size, image_format)))
    return min(sizes), max(sizes)


def _mapnik_uniform(colour: Colour, size: int, image_format: str) -> bytes:
    import mapnik

    image = mapnik.Image(size, size)
    image.fill(mapnik.Color(*colour))
    data: bytes = image.to_string(image_format)
    return data


def never_matches(layer: Layer) -> str | None:
    """Why the layer's empty_tile_detection size and hash never match a tile this server
    writes (no uniform tile of its format has that size), None when they may. A layer whose
    detection has a colour is left alone: its empty tiles are found by their pixels."""
    detection = layer.empty_tile_detection
    if detection is None or detection.size is None or detection.color is not None:
        return None
    tile_size = layer.grid.tile_size
    low, high = uniform_tile_sizes(layer.output_format, tile_size)
    if low <= detection.size <= high * (1 + _ABOVE):
        return None
    return (
        f"layers.{layer.name}.empty_tile_detection: no tile of one colour this server encodes "
        f"for the layer ({layer.output_format}, {tile_size}x{tile_size}) is {detection.size} "
        f"bytes (they are {low} to {high}): this hash, from another encoder, never matches, "
        "and empty tiles are stored. Add `color:` with the empty tiles' colour (e.g. "
        f"'{format_colour((0, 0, 0, 0))}'; `generate_tiles --get-hash Z/X/Y` prints it): "
        "a tile all of it is empty whatever its bytes"
    )
