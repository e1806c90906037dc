"""Which tiles and metatiles a generation covers: zoom specs, bboxes, geometries (and the
GeoJSON or WKT they are written in), a layer's `geoms` level by level, tile lists.

Pure functions over grids; geometries are shapely objects in the grid's CRS (shapely is
imported by the functions that take or make one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tileserver.config import LayerGeom
from tileserver.grid import Grid
from tileserver.types import BBox, TileCoord

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

_ZOOM_PART = re.compile(r"^\s*(\d{1,3})\s*(?:-\s*(\d{1,3})\s*)?$")
_TILE_LINE = re.compile(r"^\s*(\d{1,3})\s*/\s*(\d{1,12})\s*/\s*(\d{1,12})\s*$")


def parse_zooms(spec: str, levels: int) -> tuple[int, ...]:
    """'5', '2-8', '2,4,7' (or mixes: '2-4,9') -> sorted levels; ValueError names the problem."""
    zooms: set[int] = set()
    for part in spec.split(","):
        match = _ZOOM_PART.match(part)
        if match is None:
            raise ValueError(f"invalid zoom {part.strip()!r}: use 5, 2-8 or 2,4,7")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low > high:
            raise ValueError(f"invalid zoom range {part.strip()!r}: {low} > {high}")
        if high >= levels:
            raise ValueError(f"zoom {high} does not exist: the grid has levels 0 to {levels - 1}")
        zooms.update(range(low, high + 1))
    return tuple(sorted(zooms))


def format_zooms(zooms: Sequence[int]) -> str:
    """(2, 3, 4, 7) -> '2-4,7'."""
    parts: list[str] = []
    start = previous = None
    for z in [*zooms, None]:
        if previous is not None and z == previous + 1:
            previous = z
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = z
    return ",".join(parts)


def parse_tile(text: str) -> TileCoord:
    """'z/x/y' (x = column, y = row, as osm2pgsql's expire lists write them)."""
    match = _TILE_LINE.match(text)
    if match is None:
        raise ValueError(f"invalid tile {text.strip()!r}: expected z/x/y")
    z, x, y = (int(g) for g in match.groups())
    return TileCoord(z, y, x)


def read_tile_list(lines: Iterable[str]) -> list[TileCoord]:
    """Tiles of a z/x/y file; blank lines and '#' comments are skipped."""
    tiles = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0]
        if not text.strip():
            continue
        try:
            tiles.append(parse_tile(text))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return tiles


def parse_geometry(raw: bytes) -> BaseGeometry:
    """A GeoJSON (geometry, Feature or FeatureCollection) or WKT text as one geometry;
    ValueError says what is wrong with it, an empty geometry included."""
    import shapely  # here: a run with no geometry never loads shapely (nor numpy)
    from shapely.errors import ShapelyError
    from shapely.geometry import shape

    text = raw.decode("utf-8", errors="replace").strip()
    try:
        if text.startswith("{"):
            data: Any = json.loads(text)
            if data.get("type") == "FeatureCollection":
                shapes = [shape(f["geometry"]) for f in data.get("features", [])]
                geometry = shapely.union_all(shapes) if shapes else shapely.GeometryCollection()
            elif data.get("type") == "Feature":
                geometry = shape(data["geometry"])
            else:
                geometry = shape(data)
        else:
            geometry = shapely.from_wkt(text)
    except (ValueError, KeyError, TypeError, AttributeError, ShapelyError) as exc:
        raise ValueError(f"not a GeoJSON or WKT geometry: {exc}") from None
    if geometry is None or geometry.is_empty:
        raise ValueError("the geometry is empty")
    return geometry


def level_geometries(
    resolutions: Sequence[float],
    zooms: Iterable[int],
    geoms: Sequence[tuple[LayerGeom, BaseGeometry]],
    px_buffer: float = 0.0,
) -> dict[int, BaseGeometry]:
    """The union of the `geoms` entries that apply at each of zooms (by resolution),
    grown by `px_buffer` pixels of that level (the layer's, TileCloud-chain's: tiles that
    near the geometries are generated too). A level no entry applies to is left out:
    there, as in TileCloud-chain, the layer's bbox alone limits the generation."""
    import shapely

    areas: dict[int, BaseGeometry] = {}
    unions: dict[tuple[int, ...], BaseGeometry] = {}  # levels often share their entries
    for z in zooms:
        applying = tuple(i for i, (geom, _) in enumerate(geoms) if geom.applies_to(resolutions[z]))
        if not applying:
            continue
        if applying not in unions:
            parts = [geoms[i][1] for i in applying]
            unions[applying] = parts[0] if len(parts) == 1 else shapely.union_all(parts)
        area = unions[applying]
        if px_buffer > 0 and not area.is_empty:
            area = area.buffer(px_buffer * resolutions[z], quad_segs=2)
        areas[z] = area
    return areas


@dataclass(frozen=True, slots=True, order=True)
class MetatileRef:
    """A metatile by its level and the row/column of its top-left tile."""

    z: int
    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.z}/{self.row}/{self.col}"


def metatile_ref(coord: TileCoord, meta_size: int) -> MetatileRef:
    return MetatileRef(
        coord.z, coord.row - coord.row % meta_size, coord.col - coord.col % meta_size
    )


def metatiles_in_bbox(grid: Grid, z: int, bbox: BBox, meta_size: int) -> Iterator[MetatileRef]:
    """Metatiles of level z holding at least one tile that intersects bbox, row by row."""
    limits = grid.limits(z, bbox)
    row = limits.min_row - limits.min_row % meta_size
    while row <= limits.max_row:
        col = limits.min_col - limits.min_col % meta_size
        while col <= limits.max_col:
            yield MetatileRef(z, row, col)
            col += meta_size
        row += meta_size


def metatile_bbox(grid: Grid, ref: MetatileRef, meta_size: int) -> BBox:
    """Extent of the metatile's tiles (no buffer), clipped at the matrix edge."""
    width, height = grid.matrix_size(ref.z)
    span = grid.tile_span(ref.z)
    rows = min(meta_size, height - ref.row)
    cols = min(meta_size, width - ref.col)
    minx = grid.bbox.minx + ref.col * span
    maxy = grid.bbox.maxy - ref.row * span
    return BBox(minx, maxy - rows * span, minx + cols * span, maxy)


def metatiles_in_geometry(
    grid: Grid, z: int, geometry: BaseGeometry, meta_size: int, bbox: BBox | None = None
) -> Iterator[MetatileRef]:
    """Metatiles of level z that intersect geometry (and bbox, when given)."""
    if geometry.is_empty:
        return
    minx, miny, maxx, maxy = geometry.bounds
    if not (minx < maxx or miny < maxy):
        # A point or a degenerate shape: grow it by a hair so it has a box.
        pad = grid.resolutions[z] / 2
        minx, miny, maxx, maxy = minx - pad, miny - pad, maxx + pad, maxy + pad
    area = BBox(minx, miny, maxx, maxy)
    if bbox is not None:
        if not area.intersects(bbox):
            return
        area = BBox(
            max(area.minx, bbox.minx),
            max(area.miny, bbox.miny),
            min(area.maxx, bbox.maxx),
            min(area.maxy, bbox.maxy),
        )
    from shapely import box
    from shapely.prepared import prep

    prepared = prep(geometry)
    for ref in metatiles_in_bbox(grid, z, area, meta_size):
        if prepared.intersects(box(*metatile_bbox(grid, ref, meta_size).as_tuple())):
            yield ref


def metatiles_in_areas(
    grid: Grid,
    zooms: Iterable[int],
    areas: Mapping[int, BaseGeometry],
    meta_size: int,
    bbox: BBox,
) -> list[MetatileRef]:
    """Metatiles of zooms that intersect bbox and, at the levels of `areas`, that
    level's geometry."""
    refs: list[MetatileRef] = []
    for z in zooms:
        area = areas.get(z)
        if area is None:
            refs.extend(metatiles_in_bbox(grid, z, bbox, meta_size))
        else:
            refs.extend(metatiles_in_geometry(grid, z, area, meta_size, bbox))
    return refs
