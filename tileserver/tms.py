"""MapCache's tile URL services, TMS 1.0.0 documents and TileJSON 3.0.

Pure functions; no I/O. MapCache's layouts (lib/service_tms.c):

- TMS: `/tms/1.0.0/{layer}[@{grid}]/{z}/{x}/{y}.{ext}`, y counted from the bottom row of
  the tile matrix (y = matrix height - 1 - WMTS row), whatever the grid;
- Google (`gmaps`): `/gmaps/{layer}[@{grid}]/{z}/{x}/{y}.{ext}`, y from the top (the WMTS
  row), whatever the grid;
- a layer key may carry dimension values: `layer[DIM=value][DIM2=value]@grid`.

The plain `/xyz/{layer}/{grid}/{z}/{x}/{y}.{ext}` and TileJSON serve only WebMercatorQuad
grids, the quadtree XYZ clients assume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from tileserver.config import Config, Layer, Metadata
from tileserver.crs import bbox_to_wgs84
from tileserver.errors import OWSException, not_found
from tileserver.grid import Grid, format_resolution
from tileserver.tilematrixsets import is_web_mercator_quad, layer_grids

TMS_VERSION = "1.0.0"
TILEJSON = "application/json"  # TileJSON has no registered media type of its own

_KEY = re.compile(r"(?P<name>[^@\[\]]+)(?P<dims>(?:\[[^\[\]=]+=[^\[\]]*\])*)(?:@(?P<grid>.+))?")
_DIMENSION = re.compile(r"\[([^\[\]=]+)=([^\[\]]*)\]")


@dataclass(frozen=True, slots=True)
class LayerKey:
    """A MapCache TMS/gmaps layer key: `name[DIM=value]...@grid`."""

    layer: str
    grid: str | None
    dimensions: dict[str, str]  # lower-case names


def parse_layer_key(key: str) -> LayerKey:
    match = _KEY.fullmatch(key)
    if match is None:
        raise not_found(f"Invalid layer key {key[:80]!r}: expected layer[@grid]")
    dimensions = {n.lower(): v for n, v in _DIMENSION.findall(match.group("dims"))}
    return LayerKey(match.group("name"), match.group("grid"), dimensions)


def resolve(config: Config, key: LayerKey) -> tuple[Layer, Grid]:
    """The layer and grid a key names (default: the layer's first grid); 404 otherwise."""
    layer = config.layers.get(key.layer)
    if layer is None:
        raise not_found(f"Unknown layer {key.layer[:80]!r}")
    grids = layer_grids(layer)
    if key.grid is None:
        return layer, grids[0]
    for grid in grids:
        if grid.name == key.grid:
            return layer, grid
    raise not_found(
        f"Layer {layer.name!r} is not served on grid {key.grid[:80]!r}: use one of "
        f"{[g.name for g in grids]}"
    )


def require_quadtree(layer: Layer, grid: Grid) -> None:
    """XYZ and TileJSON assume the Web Mercator quadtree: 404 on any other grid."""
    if not is_web_mercator_quad(grid):
        raise not_found(
            f"Grid {grid.name!r} of layer {layer.name!r} is not the Web Mercator quadtree "
            "(WebMercatorQuad): XYZ and TileJSON are not available for it; use WMTS, "
            "OGC API - Tiles or TMS"
        )


def tms_row(grid: Grid, z: int, y: int) -> int:
    """The WMTS row of TMS tile y (counted from the bottom row of the matrix), the
    same flip both ways; a y outside the matrix stays outside it."""
    return grid.matrix_size(z)[1] - 1 - y


def zoom(grid: Grid, text: str) -> int:
    """A level index of grid; 404 when it has none such."""
    if not text.isdigit() or int(text) >= len(grid.resolutions):
        raise OWSException(
            "TileOutOfRange",
            f"No level {text[:20]!r} in grid {grid.name!r}: 0 to {len(grid.resolutions) - 1}",
            "tilematrix",
            status=404,
        )
    return int(text)


# --- TMS 1.0.0 documents (https://wiki.osgeo.org/wiki/Tile_Map_Service_Specification) ---

_XML = '<?xml version="1.0" encoding="UTF-8"?>\n'


def services_document(base: str) -> bytes:
    """`/tms/`: the TileMapServices of the server (one, version 1.0.0)."""
    href = quoteattr(f"{base}/tms/{TMS_VERSION}/")
    return (
        f'{_XML}<Services>\n  <TileMapService title="tileserver" version="{TMS_VERSION}" '
        f"href={href}/>\n</Services>\n"
    ).encode()


def _profile(grid: Grid) -> str:
    return "global-mercator" if is_web_mercator_quad(grid) else "none"


def tile_map_service(config: Config, base: str) -> bytes:
    """`/tms/1.0.0/`: every layer on every grid, as a TileMap."""
    metadata: Metadata = config.metadata
    lines = [
        f'{_XML}<TileMapService version="{TMS_VERSION}" services={quoteattr(base + "/tms/")}>',
        f"  <Title>{escape(metadata.title)}</Title>",
        f"  <Abstract>{escape(metadata.abstract)}</Abstract>",
        "  <TileMaps>",
    ]
    for layer in config.layers.values():
        for grid in layer_grids(layer):
            href = f"{base}/tms/{TMS_VERSION}/{layer.name}@{grid.name}"
            lines.append(
                f"    <TileMap title={quoteattr(layer.title)} srs={quoteattr(grid.srs)} "
                f"profile={quoteattr(_profile(grid))} href={quoteattr(href)}/>"
            )
    lines += ["  </TileMaps>", "</TileMapService>", ""]
    return "\n".join(lines).encode()


def tile_map(layer: Layer, grid: Grid, base: str) -> bytes:
    """`/tms/1.0.0/{layer}@{grid}`: one TileMap, its Origin the grid's lower-left corner
    (as MapCache writes it), a TileSet per level."""
    num = format_resolution
    box, extent = layer.bbox, grid.bbox
    href = f"{base}/tms/{TMS_VERSION}/{layer.name}@{grid.name}"
    lines = [
        f'{_XML}<TileMap version="{TMS_VERSION}" '
        f"tilemapservice={quoteattr(f'{base}/tms/{TMS_VERSION}/')}>",
        f"  <Title>{escape(layer.title)}</Title>",
        f"  <Abstract>{escape(layer.abstract)}</Abstract>",
        f"  <SRS>{escape(grid.srs)}</SRS>",
        f'  <BoundingBox minx="{num(box.minx)}" miny="{num(box.miny)}" maxx="{num(box.maxx)}" '
        f'maxy="{num(box.maxy)}"/>',
        f'  <Origin x="{num(extent.minx)}" y="{num(extent.miny)}"/>',
        f'  <TileFormat width="{grid.tile_size}" height="{grid.tile_size}" '
        f"mime-type={quoteattr(layer.mime_type)} extension={quoteattr(layer.extension)}/>",
        f"  <TileSets profile={quoteattr(_profile(grid))}>",
    ]
    for z, resolution in enumerate(grid.resolutions):
        lines.append(
            f'    <TileSet href={quoteattr(f"{href}/{z}")} units-per-pixel="{num(resolution)}" '
            f'order="{z}"/>'
        )
    lines += ["  </TileSets>", "</TileMap>", ""]
    return "\n".join(lines).encode()


# --- TileJSON 3.0.0 (https://github.com/mapbox/tilejson-spec/tree/master/3.0.0) ---------


def tilejson(layer: Layer, grid: Grid, base: str) -> dict[str, Any]:
    """The TileJSON of layer on a WebMercatorQuad grid: the /xyz/ template, the levels
    and the layer's bbox in WGS84."""
    require_quadtree(layer, grid)
    west, south, east, north = bbox_to_wgs84(layer.bbox, grid.srs).as_tuple()
    maxzoom = len(grid.resolutions) - 1
    # The level where the layer's bbox is a few tiles wide: where clients start.
    span = max(layer.bbox.maxx - layer.bbox.minx, layer.bbox.maxy - layer.bbox.miny)
    center_zoom = next(
        (z for z, r in enumerate(grid.resolutions) if r * grid.tile_size * 4 <= span), maxzoom
    )
    template = f"{base}/xyz/{layer.name}/{grid.name}/{{z}}/{{x}}/{{y}}.{layer.extension}"
    document: dict[str, Any] = {"tilejson": "3.0.0", "name": layer.title}
    if layer.abstract:
        document["description"] = layer.abstract
    document.update(
        {
            "scheme": "xyz",
            "tiles": [template],
            "minzoom": 0,
            "maxzoom": maxzoom,
            "bounds": [west, south, east, north],
            "center": [(west + east) / 2, (south + north) / 2, center_zoom],
        }
    )
    return document
