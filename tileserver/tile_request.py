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


@dataclass(frozen=True, slots=True)
class FeatureInfoRequest:
    """WMTS GetFeatureInfo: pixel (i, j) of a tile, counted from its top-left corner."""

    tile: TileRequest
    i: int
    j: int
    info_format: str
