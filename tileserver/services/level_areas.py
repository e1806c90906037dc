"""The area a generation covers at each level: a layer's `geoms` (files read and queries
run now, through the face's loader), checked against the layer's bbox and united per
level, then intersected with --geom. A level no area limits is left out: there the
layer's bbox alone limits the generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tileserver.config import Layer, LayerGeom
from tileserver.errors import GeomsError
from tileserver.grid import bbox_text
from tileserver.selection import format_zooms, level_geometries
from tileserver.services.invalidation import reproject

if TYPE_CHECKING:  # shapely is imported where a geometry is made: see `selection`
    from shapely.geometry.base import BaseGeometry

GeometryLoader = Callable[[LayerGeom, str], "BaseGeometry"]  # a `geoms` entry, its YAML path


def layer_geometries(
    layer: Layer,
    zooms: Sequence[int],
    load_geometry: GeometryLoader,
    info: Callable[[str], None],
    warn: Callable[[str], None],
) -> dict[int, BaseGeometry]:
    """The union of the layer's `geoms` entries at each level of zooms they apply to,
    files read and queries run now; the levels no entry applies to are left out. `info`
    tells which entry limits which levels, `warn` of an entry that adds nothing; an entry
    outside the layer's bbox raises GeomsError."""
    grid = layer.grid
    used = [
        (i, geom)
        for i, geom in enumerate(layer.geoms)
        if any(geom.applies_to(grid.resolutions[z]) for z in zooms)
    ]
    if not used:
        return {}
    from shapely import box

    loaded = []
    for i, geom in used:
        where = f"layers.{layer.name}.geoms[{i}]"
        # In the CRS of the layer's first grid, as its bbox: reprojected to this grid's.
        geometry = reproject(load_geometry(geom, where), layer.grids[0].srs, grid.srs)
        levels = format_zooms([z for z in zooms if geom.applies_to(grid.resolutions[z])])
        if geometry.is_empty:
            warn(f"{where}: the query returned no geometry: it adds nothing to levels {levels}")
        elif not geometry.intersects(box(*layer.bbox.as_tuple())):
            raise GeomsError(
                f"{where}: the geometry does not reach layer {layer.name!r}'s bbox "
                f"{bbox_text(layer.bbox)}: its coordinates must be in the grid's CRS, "
                f"{grid.srs}"
            )
        else:
            kind = f"file {geom.file}" if geom.file is not None else "query"
            info(f"{where}: the {kind} limits levels {levels}")
        loaded.append((geom, geometry))
    return level_geometries(grid.resolutions, zooms, loaded, layer.px_buffer)


def intersect_areas(
    areas: dict[int, BaseGeometry], geometry: BaseGeometry, zooms: Sequence[int]
) -> dict[int, BaseGeometry]:
    """geometry at every level of zooms, intersected with the area of the levels that
    have one."""
    intersections: dict[int, BaseGeometry] = {}  # by id: levels often share one area
    result: dict[int, BaseGeometry] = {}
    for z in zooms:
        area = areas.get(z)
        if area is None:
            result[z] = geometry
            continue
        if id(area) not in intersections:
            intersections[id(area)] = area.intersection(geometry)
        result[z] = intersections[id(area)]
    return result
