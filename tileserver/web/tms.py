"""MapCache's URL services and XYZ: TMS (`/tms/1.0.0/...`, y from the bottom), Google
(`/gmaps/...`, y from the top), plain XYZ (`/xyz/{layer}/{grid}/{z}/{x}/{y}.{ext}`) and
TileJSON 3.0 (`/xyz/{layer}/{grid}/tilejson.json`), on the same tile service and with the
same tile headers as WMTS. Errors are JSON (as OGC API's): 404 for an unknown layer, grid
or level, a tile outside the layer's limits, or a grid that is not a quadtree (XYZ,
TileJSON); 400 for a non-numeric coordinate or an unknown dimension value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from tileserver.config import FORMATS, Layer
from tileserver.errors import OWSException, invalid_parameter, not_found
from tileserver.grid import Grid
from tileserver.tilematrixsets import layer_on
from tileserver.tms import (
    TILEJSON,
    TMS_VERSION,
    LayerKey,
    parse_layer_key,
    require_quadtree,
    resolve,
    services_document,
    tile_map,
    tile_map_service,
    tilejson,
    tms_row,
    zoom,
)
from tileserver.web.handlers import answer_tile as tile_response
from tileserver.web.handlers import backends_of, base_url, ignore_expect
from tileserver.web.headers import CORS
from tileserver.web.problems import ERROR_FORMAT, JSON_ERRORS
from tileserver.web.runtime import Backends
from tileserver.wmts import tile_request

Handler = Callable[[web.Request], Any]

_DOCUMENT_HEADERS = {**CORS, "Cache-Control": "public, max-age=300"}


class _TmsHandlers:
    def _start(self, request: web.Request) -> tuple[Backends, str]:
        request[ERROR_FORMAT] = JSON_ERRORS
        backends = backends_of(request)
        base = backends.config.server.url or base_url(request)
        return backends, base.rstrip("/")

    async def services(self, request: web.Request) -> web.Response:
        _, base = self._start(request)
        return _xml(services_document(base))

    async def tile_map_service(self, request: web.Request) -> web.Response:
        backends, base = self._start(request)
        return _xml(tile_map_service(backends.config, base))

    async def tile_map(self, request: web.Request) -> web.Response:
        backends, base = self._start(request)
        layer, grid = resolve(backends.config, parse_layer_key(request.match_info["key"]))
        return _xml(tile_map(layer, grid, base))

    async def tms_tile(self, request: web.Request) -> web.Response:
        return await self._key_tile(request, bottom_up=True)

    async def gmaps_tile(self, request: web.Request) -> web.Response:
        return await self._key_tile(request, bottom_up=False)

    async def _key_tile(self, request: web.Request, bottom_up: bool) -> web.Response:
        backends, _ = self._start(request)
        key = parse_layer_key(request.match_info["key"])
        layer, grid = resolve(backends.config, key)
        return await self._tile(request, backends, layer, grid, key.dimensions, bottom_up)

    async def xyz_tile(self, request: web.Request) -> web.Response:
        backends, _ = self._start(request)
        layer, grid = resolve(
            backends.config, LayerKey(request.match_info["layer"], request.match_info["grid"], {})
        )
        require_quadtree(layer, grid)
        dimensions = {k.lower(): v for k, v in request.query.items()}
        return await self._tile(request, backends, layer, grid, dimensions, bottom_up=False)

    async def tilejson(self, request: web.Request) -> web.Response:
        backends, base = self._start(request)
        layer, grid = resolve(
            backends.config, LayerKey(request.match_info["layer"], request.match_info["grid"], {})
        )
        return web.Response(
            text=json.dumps(tilejson(layer, grid, base)),
            content_type=TILEJSON,
            headers=_DOCUMENT_HEADERS,
        )

    async def unknown(self, request: web.Request) -> web.Response:
        self._start(request)
        raise not_found(f"No such resource: {request.path[:200]}")

    async def _tile(
        self,
        request: web.Request,
        backends: Backends,
        layer: Layer,
        grid: Grid,
        dimensions: Mapping[str, str],
        bottom_up: bool,
    ) -> web.Response:
        y_text, dot, extension = request.match_info["y"].partition(".")
        if not dot or FORMATS.get(extension.lower()) != layer.mime_type:
            raise not_found(
                f"Tiles of {layer.name!r} are {layer.mime_type}: end the URL in .{layer.extension}"
            )
        z = zoom(grid, request.match_info["z"])
        x_text = request.match_info["x"]
        y = _integer("y", y_text)
        row = tms_row(grid, z, y) if bottom_up else y
        served = layer_on(layer, grid)
        if served is None:  # pragma: no cover - resolve only returns the layer's grids
            raise not_found(f"Layer {layer.name!r} is not served on {grid.name!r}")
        try:
            parsed = tile_request(
                served,
                style=served.wmts_style,
                matrix_set=grid.name,
                matrix=grid.matrix_id(z),
                row=str(row),
                col=x_text,
                dimensions=dimensions,
            )
        except OWSException as exc:
            if exc.code == "TileOutOfRange":
                # Say it in the request's own terms: TMS's y is not the WMTS row.
                axis = "x" if exc.locator == "tilecol" else "y"
                raise OWSException(
                    "TileOutOfRange",
                    f"Tile {z}/{x_text}/{y} is outside layer {layer.name!r} ({axis} out of "
                    "range): see its TileMatrixSetLimits in the WMTS Capabilities",
                    axis,
                    status=404,
                ) from exc
            raise
        backends.remember_face_path(request.raw_path, parsed)
        return await tile_response(request, parsed)


def _integer(name: str, text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise invalid_parameter(name, f"{name} must be a non-negative integer, got {text[:40]!r}")
    return int(text)


def _xml(body: bytes) -> web.Response:
    return web.Response(
        body=body, content_type="application/xml", charset="utf-8", headers=_DOCUMENT_HEADERS
    )


def setup_tms(
    app: web.Application,
) -> None:
    """Adds MapCache's /tms/ and /gmaps/ routes, /xyz/ and TileJSON."""
    handlers = _TmsHandlers()
    tms = f"/tms/{TMS_VERSION}"
    routes: list[tuple[str, Handler]] = [
        ("/tms", handlers.services),
        ("/tms/", handlers.services),
        (tms, handlers.tile_map_service),
        (tms + "/", handlers.tile_map_service),
        (tms + "/{key}", handlers.tile_map),
        (tms + "/{key}/", handlers.tile_map),
        (tms + "/{key}/{z}/{x}/{y}", handlers.tms_tile),
        ("/gmaps/{key}/{z}/{x}/{y}", handlers.gmaps_tile),
        ("/xyz/{layer}/{grid}/tilejson.json", handlers.tilejson),
        ("/xyz/{layer}/{grid}/{z}/{x}/{y}", handlers.xyz_tile),
        # [\s\S]: a path with an encoded newline gets the JSON 404 too.
        ("/gmaps", handlers.unknown),
        ("/xyz", handlers.unknown),
        (r"/tms/{tail:[\s\S]*}", handlers.unknown),
        (r"/gmaps/{tail:[\s\S]*}", handlers.unknown),
        (r"/xyz/{tail:[\s\S]*}", handlers.unknown),
    ]
    for path, handler in routes:
        app.router.add_get(path, handler, expect_handler=ignore_expect)
