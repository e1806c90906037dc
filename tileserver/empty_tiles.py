"""Empty tiles (plain sea, plain land) recognised by their bytes, as TileCloud-chain does.

A tile is empty when its size in bytes and the SHA-1 of its bytes match the layer's
`empty_tile_detection` (TileCloud-chain's `HashDropper`); such tiles are not stored, and
the server answers them per `missing_tile`. Pure functions on encoded tiles.
"""

from __future__ import annotations

import hashlib
import io

from tileserver.config import EmptyTile


def signature(data: bytes) -> EmptyTile:
    """The size and SHA-1 (hex) of an encoded tile, as `empty_tile_detection` holds them."""
    return EmptyTile(size=len(data), hash=hashlib.sha1(data).hexdigest())


def is_empty(data: bytes, detection: EmptyTile | None) -> bool:
    """True when `data` matches `detection`; never without a detection."""
    if detection is None or len(data) != detection.size:
        return False  # the size first: no hash for the (many) tiles of another size
    return hashlib.sha1(data).hexdigest() == detection.hash.lower()


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
    lines = [
        "empty_tile_detection:",
        f"    size: {detection.size}",
        f"    hash: {detection.hash}",
        "# tileserver checks each tile against empty_tile_detection; the metatile block is",
        "# accepted for TileCloud-chain compatibility only",
        "empty_metatile_detection:",
        f"    size: {detection.size}",
        f"    hash: {detection.hash}",
    ]
    return "\n".join(pad + line for line in lines) + "\n"
