"""A validated request for one tile, whatever the protocol it came in."""

from __future__ import annotations

from dataclasses import dataclass

from tileserver.config import Layer
from tileserver.types import TileCoord


@dataclass(frozen=True, slots=True)
class TileRequest:
    layer: Layer
    style: str
    dimensions: tuple[str, ...]  # values, in the order of layer.dimensions
    coord: TileCoord
