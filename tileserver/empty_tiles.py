"""Empty tiles (plain sea, plain land, nothing at all) recognised as TileCloud-chain does,
by the size and SHA-1 of their bytes (its `HashDropper`), and by their colour.

Bytes only match where the same encoder wrote them: a tile rendered all of the
`empty_tile_detection`'s `color` (told by the render, from its pixels: `uniform`) is empty
whatever its bytes. Empty tiles are not stored, and the server answers them per
`missing_tile`. Pure functions on encoded tiles.
"""

from __future__ import annotations

import hashlib
import io

from tileserver.config import EmptyTile
from tileserver.uniform_tiles import Colour, format_colour, same_colour, uniform_colour


def signature(data: bytes) -> EmptyTile:
    """The size and SHA-1 (hex) of an encoded tile, as `empty_tile_detection` holds them."""
    return EmptyTile(size=len(data), hash=hashlib.sha1(data).hexdigest())


def is_empty(data: bytes, detection: EmptyTile | None, colour: Colour | None = None) -> bool:
    """True when `data` matches `detection`'s size and hash, or when the tile is all of
    one colour (`colour`, as its render saw it) and that is `detection`'s; never without a
    detection."""
    if detection is None:
        return False
    if colour is not None and detection.color is not None and same_colour(colour, detection.color):
        return True
    if detection.hash is None or len(data) != detection.size:
        return False  # the size first: no hash for the (many) tiles of another size
    return hashlib.sha1(data).hexdigest() == detection.hash.lower()


def is_stored_empty(data: bytes, detection: EmptyTile) -> bool:
    """is_empty for a tile read back from a store (no render to tell its colour): decoded
    only where the detection has a colour and the bytes do not match."""
    if is_empty(data, detection):
        return True
    return detection.color is not None and is_empty(data, detection, uniform_colour(data))


def colour_count(data: bytes) -> int:
    """The number of distinct RGBA colours of an encoded image (1: a uniform tile)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgba = image.convert("RGBA")
    colours = rgba.getcolors(maxcolors=rgba.width * rgba.height)
    assert colours is not None  # maxcolors covers every pixel
    return len(colours)


def detection_yaml(detection: EmptyTile, indent: int = 4) -> str:
    """The `empty_tile_detection` and `empty_metatile_detection` blocks to paste under a
    layer of the configuration (the lines start with `indent` spaces)."""
    pad = " " * indent
    lines = ["empty_tile_detection:", f"    size: {detection.size}", f"    hash: {detection.hash}"]
    if detection.color is not None:
        lines.append(f"    color: '{format_colour(detection.color)}'   # whatever the encoder")
    lines += [
        "# tileserver checks each tile against empty_tile_detection; the metatile block is",
        "# accepted for TileCloud-chain compatibility only",
        "empty_metatile_detection:",
        f"    size: {detection.size}",
        f"    hash: {detection.hash}",
    ]
    return "\n".join(pad + line for line in lines) + "\n"
