"""Which tiles of a metatile a generation writes: those inside the requested bbox, and
inside a geometry (--geom, a layer's `geoms`, the tiles of a --tiles list) where there is
one. shapely is imported by the filters that use a geometry, when they are built: a run
over a bbox never loads it (nor numpy, and the threads of its BLAS)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from tileserver.config import Layer
from tileserver.grid import Grid, Metatile, metatile_for
from tileserver.selection import MetatileRef
from tileserver.types import BBox, Limits, TileCoord

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry
    from shapely.prepared import PreparedGeometry

TileFilter = Callable[[TileCoord], bool]
"""True for the tiles of a rendered metatile that the run writes."""


def tiles_in_bbox(grid: Grid, bbox: BBox) -> TileFilter:
    """Tiles that intersect bbox (the per-level TileMatrixLimits of bbox)."""
    limits: dict[int, Limits] = {}

    def wanted(coord: TileCoord) -> bool:
        level = limits.get(coord.z)
        if level is None:
            level = limits[coord.z] = grid.limits(coord.z, bbox)
        return level.contains(coord.row, coord.col)

    return wanted


def tiles_in_geometry(grid: Grid, geometry: BaseGeometry, bbox: BBox) -> TileFilter:
    """Tiles that intersect both geometry and bbox."""
    from shapely import box
    from shapely.prepared import prep

    in_bbox = tiles_in_bbox(grid, bbox)
    prepared = prep(geometry)

    def wanted(coord: TileCoord) -> bool:
        return in_bbox(coord) and bool(prepared.intersects(box(*grid.tile_bbox(coord).as_tuple())))

    return wanted


def tiles_in_areas(grid: Grid, areas: Mapping[int, BaseGeometry], bbox: BBox) -> TileFilter:
    """Tiles that intersect bbox and, at the levels of `areas`, that level's geometry."""
    in_bbox = tiles_in_bbox(grid, bbox)
    if not areas:
        return in_bbox
    from shapely import box
    from shapely.prepared import prep

    prepared_by_id: dict[int, PreparedGeometry[BaseGeometry]] = {}
    prepared: dict[int, PreparedGeometry[BaseGeometry]] = {}
    for z, area in areas.items():
        if id(area) not in prepared_by_id:  # levels often share one geometry
            prepared_by_id[id(area)] = prep(area)
        prepared[z] = prepared_by_id[id(area)]

    def wanted(coord: TileCoord) -> bool:
        if not in_bbox(coord):
            return False
        area = prepared.get(coord.z)
        return area is None or bool(area.intersects(box(*grid.tile_bbox(coord).as_tuple())))

    return wanted


def tiles_area(grid: Grid, tiles: Iterable[TileCoord]) -> BaseGeometry:
    """The area of a tile list as one geometry; each tile shrunk by half a pixel, so that
    the tiles around it, which only touch it, do not intersect the area."""
    from shapely import box, union_all

    boxes = []
    for coord in set(tiles):
        bbox, inset = grid.tile_bbox(coord), grid.resolutions[coord.z] / 2
        boxes.append(
            box(bbox.minx + inset, bbox.miny + inset, bbox.maxx - inset, bbox.maxy - inset)
        )
    return union_all(boxes)


def metatile_of(layer: Layer, ref: MetatileRef) -> Metatile:
    """The metatile to render for ref, with the layer's size and buffer."""
    coord = TileCoord(ref.z, ref.row, ref.col)
    return metatile_for(layer.grid, coord, layer.effective_meta_size, layer.meta_buffer)


def wanted_tiles(layer: Layer, ref: MetatileRef, wanted: TileFilter | None) -> list[TileCoord]:
    """The tiles of ref's metatile that a run with the filter `wanted` writes."""
    coords = [t.coord for t in metatile_of(layer, ref).tiles]
    return coords if wanted is None else [c for c in coords if wanted(c)]


def unique_metatiles(refs: Iterable[MetatileRef]) -> list[MetatileRef]:
    """refs without repeats, by level, row and column."""
    return sorted(set(refs))
