"""Grids as OGC TileMatrixSets 2.0 (OGC 17-083r4) for OGC API - Tiles, XYZ and TileJSON.

Pure functions over `Grid`s, no I/O. A grid that is a prefix of a registered tile matrix
set (WebMercatorQuad: EPSG:3857, the whole Web Mercator square, 256-pixel tiles,
resolutions halving from level 0, matrices named by zoom level) is published under the
registered identifier and URI; any other grid is a custom tile matrix set named after the
grid. Only WebMercatorQuad grids are quadtrees in the sense XYZ clients (Leaflet,
MapLibre, TileJSON) assume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tileserver.grid import Grid

if TYPE_CHECKING:
    from tileserver.config import Layer

TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
WEB_MERCATOR_QUAD = "WebMercatorQuad"

_HALF_CIRCUMFERENCE = math.pi * 6378137.0  # EPSG:3857's half extent, in metres
_WEB_MERCATOR_LEVELS = 25  # the registered definition: tile matrices 0 to 24
_WEB_MERCATOR_RES0 = 2 * _HALF_CIRCUMFERENCE / 256


@dataclass(frozen=True, slots=True)
class WellKnown:
    """A tile matrix set of the OGC register (17-083r4, annex D)."""

    id: str
    title: str
    uri: str
    well_known_scale_set: str
    ordered_axes: tuple[str, str]


_WEB_MERCATOR = WellKnown(
    id=WEB_MERCATOR_QUAD,
    title="Google Maps Compatible for the World",
    uri=TMS_URI + WEB_MERCATOR_QUAD,
    well_known_scale_set="http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
    ordered_axes=("X", "Y"),
)


def layer_grids(layer: Layer) -> tuple[Grid, ...]:
    """The grids a layer is served on (`grid`, then the others of `grids`)."""
    return layer.grids


def layer_on(layer: Layer, grid: Grid) -> Layer | None:
    """The layer as served on grid (what a TileRequest takes), None when it is not."""
    return layer.on_grid(grid.name)


def crs_uri(srs: str) -> str:
    """The OGC URI of an 'EPSG:nnnn' code (OGC API's form); other codes are kept."""
    authority, _, code = srs.partition(":")
    if authority.upper() == "EPSG" and code.isdigit():
        return f"http://www.opengis.net/def/crs/EPSG/0/{code}"
    return srs


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def is_web_mercator_quad(grid: Grid) -> bool:
    """Whether grid is WebMercatorQuad from level 0 (maybe fewer levels): the quadtree
    that XYZ clients assume."""
    if grid.srs.upper() != "EPSG:3857" or grid.tile_size != 256:
        return False
    if grid.matrix_identifier != "zoom" or len(grid.resolutions) > _WEB_MERCATOR_LEVELS:
        return False
    edge = _HALF_CIRCUMFERENCE
    corners = (-edge, -edge, edge, edge)
    if not all(_close(a, b, 1e-9) for a, b in zip(grid.bbox.as_tuple(), corners, strict=True)):
        return False
    return all(
        _close(resolution, _WEB_MERCATOR_RES0 / 2**z, 1e-9)
        for z, resolution in enumerate(grid.resolutions)
    )


def well_known(grid: Grid) -> WellKnown | None:
    """The registered tile matrix set grid belongs to, None for a custom one."""
    return _WEB_MERCATOR if is_web_mercator_quad(grid) else None


@dataclass(frozen=True, slots=True)
class TileMatrixSets:
    """The tile matrix sets of a configuration: identifier -> grid, and back."""

    by_id: Mapping[str, Grid]
    ids: Mapping[str, str]  # grid name -> identifier

    def id_of(self, grid: Grid) -> str:
        return self.ids[grid.name]

    def well_known(self, tms_id: str) -> WellKnown | None:
        grid = self.by_id.get(tms_id)
        if grid is None:
            return None
        known = well_known(grid)
        return known if known is not None and known.id == tms_id else None


def tile_matrix_sets(grids: Iterable[Grid]) -> TileMatrixSets:
    """Identifiers for grids, in their order: a registered grid takes the registered
    identifier (the first of several such grids is the definition published for it)
    unless a configured grid already has that name; any other grid keeps its name."""
    grids = list(grids)
    names = {grid.name for grid in grids}
    by_id: dict[str, Grid] = {}
    ids: dict[str, str] = {}
    for grid in grids:
        known = well_known(grid)
        tms_id = grid.name if known is None or known.id in names else known.id
        by_id.setdefault(tms_id, grid)
        ids[grid.name] = tms_id
    return TileMatrixSets(by_id=by_id, ids=ids)


def _point(grid: Grid, x: float, y: float) -> list[float]:
    """A position in the CRS's own axis order (TMS 2.0 pointOfOrigin, boundingBox)."""
    return [y, x] if grid.yx_axis_order else [x, y]


def _matrix(grid: Grid, z: int, known: WellKnown | None) -> dict[str, Any]:
    if known is not None:
        resolution = _WEB_MERCATOR_RES0 / 2**z
        width = height = 2**z
        scale = resolution / 0.00028
    else:
        resolution = grid.resolutions[z]
        width, height = grid.matrix_size(z)
        scale = grid.scale_denominator(z)
    return {
        "id": str(z) if known is not None else grid.matrix_id(z),
        "scaleDenominator": scale,
        "cellSize": resolution,
        "cornerOfOrigin": "topLeft",
        "pointOfOrigin": _point(grid, grid.bbox.minx, grid.bbox.maxy),
        "tileWidth": grid.tile_size,
        "tileHeight": grid.tile_size,
        "matrixWidth": width,
        "matrixHeight": height,
    }


def tile_matrix_set_document(grid: Grid, tms_id: str, tms1_members: bool = False) -> dict[str, Any]:
    """The TMS 2.0 JSON definition of grid published as tms_id (the registered definition,
    every level, for a registered tile matrix set).

    `tms1_members` adds the member names of TMS 1.0 (17-083r2) and of OGC API - Tiles'
    drafts beside TMS 2.0's: `identifier`, `supportedCRS` and each matrix's `identifier`
    and `topLeftCorner`. GDAL before 3.7 (Debian 12's 3.6) reads only those; the document is
    still valid TMS 2.0 JSON, but strict TMS 2.0 readers (morecantile) refuse a tile
    matrix's unknown member, so this is a second representation, not the default.
    """
    known = well_known(grid)
    if known is not None and known.id != tms_id:
        known = None  # a configured grid took the registered name: published as custom
    crs = crs_uri(grid.srs)
    document: dict[str, Any] = {"id": tms_id, "title": known.title if known else tms_id}
    if known is not None:
        document["uri"] = known.uri
    document["crs"] = crs
    if known is not None:
        document["orderedAxes"] = list(known.ordered_axes)
        document["wellKnownScaleSet"] = known.well_known_scale_set
    document["boundingBox"] = {
        "lowerLeft": _point(grid, grid.bbox.minx, grid.bbox.miny),
        "upperRight": _point(grid, grid.bbox.maxx, grid.bbox.maxy),
        "crs": crs,
    }
    levels = _WEB_MERCATOR_LEVELS if known is not None else len(grid.resolutions)
    document["tileMatrices"] = [_matrix(grid, z, known) for z in range(levels)]
    if tms1_members:
        document["identifier"] = tms_id
        document["supportedCRS"] = crs
        for matrix in document["tileMatrices"]:
            matrix["identifier"] = matrix["id"]
            matrix["topLeftCorner"] = matrix["pointOfOrigin"]
    return document
