"""A validated request for one tile, whatever the protocol it came in."""

from __future__ import annotations

from dataclasses import dataclass

from tileserver.config import Layer
from tileserver.grid import Metatile, metatile_for
from tileserver.keys import layer_key_part
from tileserver.store_layout import tile_path
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


def key_part(request: TileRequest) -> str:
    """The part of the tile's cache keys that names its layer, style, dimensions and grid."""
    layer = request.layer
    return layer_key_part(layer.name, request.style, request.dimensions, layer.grid.name)


def store_path(request: TileRequest) -> str:
    """The tile's path in a store (TileCloud-chain's layout, `store_layout`)."""
    layer, coord, grid = request.layer, request.coord, request.layer.grid
    return tile_path(
        "", layer.name, request.style, request.dimensions, grid.name,
        grid.matrix_id(coord.z), coord.row, coord.col, layer.extension,
    )  # fmt: skip


def metatile_of(request: TileRequest) -> Metatile:
    """The metatile its layer renders the tile in."""
    layer = request.layer
    return metatile_for(
        grid=layer.grid,
        coord=request.coord,
        meta_size=layer.effective_meta_size,
        meta_buffer=layer.meta_buffer,
    )
