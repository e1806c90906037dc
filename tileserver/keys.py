"""Memcached key layout: pure functions, no I/O.

A tile key is `prefix + layer/style/[dimension values/]matrix set/z/row/col`, the
same order as the WMTS REST path. Names are validated at config load to contain no
whitespace or control characters; keys longer than Memcached's 250 bytes are
replaced by a digest under the same prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from tileserver.types import TileCoord

MAX_KEY_BYTES = 250


def _bounded(key: str, prefix: str) -> str:
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    return f"{prefix}#sha1/{hashlib.sha1(key.encode()).hexdigest()}"


def layer_key_part(layer: str, style: str, dimensions: Sequence[str], matrix_set: str) -> str:
    """The part of a key shared by every tile of one layer/style/dimensions/matrix set."""
    return "/".join((layer, style, *dimensions, matrix_set))


def tile_key(prefix: str, layer_part: str, coord: TileCoord) -> str:
    return _bounded(f"{prefix}{layer_part}/{coord.z}/{coord.row}/{coord.col}", prefix)


def metatile_lock_key(prefix: str, layer_part: str, z: int, row: int, col: int) -> str:
    """Key of the render lock of the metatile whose top-left tile is (z, row, col).

    '#' appears in no layer, style or dimension value (config validation), so a lock key
    can never be the key of a tile.
    """
    return _bounded(f"{prefix}#lock/{layer_part}/{z}/{row}/{col}", prefix)
