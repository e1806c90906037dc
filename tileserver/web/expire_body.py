"""The body of `POST /admin/expire` (web/admin): what to expire, read and checked, or
`Refused` with the 4xx that says what is wrong with it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import shapely
from aiohttp import web
from shapely.geometry.base import BaseGeometry

from tileserver.config import Config, Layer
from tileserver.selection import parse_geometry, parse_zooms
from tileserver.services.invalidation import clip_to_layer, on_grids


class Refused(Exception):
    """An admin request answered with a JSON error."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


EXPIRE_KEYS = ("layer", "grid", "geometry", "bbox", "zooms", "dry_run")


async def read_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refused(400, "the body must be a JSON object")
    return data


def expire_layer(config: Config, data: Mapping[str, Any]) -> Layer:
    name = data.get("layer")
    if not isinstance(name, str) or name not in config.layers:
        raise Refused(
            400, f"unknown layer {name!r} (defined: {', '.join(config.layers) or 'none'})"
        )
    return config.layers[name]


def expire_zooms(layer: Layer, value: Any) -> tuple[int, ...]:
    """The levels to expire on the layer's grid: `value`, else its on-demand levels."""
    levels = len(layer.grid.resolutions)
    if value is None:
        return tuple(z for z in range(levels) if layer.is_on_demand(z))
    try:
        if isinstance(value, str):
            return parse_zooms(value, levels)
        if isinstance(value, list) and value and all(type(z) is int for z in value):
            return parse_zooms(",".join(map(str, value)), levels)
    except ValueError as exc:
        grid = f" (grid {layer.grid.name!r})" if len(layer.grids) > 1 else ""
        raise Refused(400, f"zooms: {exc}{grid}") from None
    raise Refused(400, f"zooms: expected '15-18' or a list of levels, got {value!r}")


def _area(layer: Layer, data: Mapping[str, Any]) -> BaseGeometry:
    """The area to expire, in the CRS of the layer's grid (the first one, or `grid`)."""
    geometry, bbox = data.get("geometry"), data.get("bbox")
    if geometry is not None and bbox is not None:
        raise Refused(400, "give `geometry` or `bbox`, not both")
    if geometry is not None:
        if not isinstance(geometry, str | dict):
            raise Refused(400, "geometry: expected WKT text or a GeoJSON object")
        raw = geometry.encode() if isinstance(geometry, str) else json.dumps(geometry).encode()
        try:
            area = parse_geometry(raw)
        except ValueError as exc:
            raise Refused(400, f"geometry: {exc}") from None
    elif bbox is not None:
        numbers = isinstance(bbox, list) and len(bbox) == 4 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)  # fmt: skip
        if not numbers or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise Refused(400, f"bbox: expected [minx, miny, maxx, maxy], got {bbox!r}")
        area = shapely.box(*bbox)
    else:
        area = shapely.box(*layer.bbox.as_tuple())
    if clip_to_layer(layer, area).is_empty:
        raise Refused(
            400,
            f"the area does not reach layer {layer.name!r}'s bbox "
            f"{list(layer.bbox.as_tuple())}: coordinates must be in the grid's CRS, "
            f"{layer.grid.srs}",
        )
    return area


def expire_areas(layer: Layer, data: Mapping[str, Any]) -> list[tuple[Layer, BaseGeometry]]:
    """The layer on each grid to expire (`grid`, else all of them) with the area there."""
    grid = data.get("grid")
    if grid is not None and not isinstance(grid, str):
        raise Refused(400, f"grid: expected a grid name, got {grid!r}")
    first = layer if grid is None else layer.on_grid(grid)
    if first is None:
        raise Refused(
            400, f"grid: layer {layer.name!r} has no grid {grid!r} "
            f"(its grids: {', '.join(layer.grid_names)})",
        )  # fmt: skip
    return on_grids(layer, _area(first, data), grid)
