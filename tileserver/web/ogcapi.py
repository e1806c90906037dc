"""OGC API - Tiles 1.0 under /ogcapi: landing page, conformance, tile matrix sets,
collections, tilesets and tiles, on the same tile service (caches, stores, renders) and
with the same tile headers as WMTS.

Metadata is JSON only (`f=json` or an `Accept` that takes `application/json`); tiles are
the layer's format (`f=png`/`f=jpeg`, an `Accept` that takes it, or an extension on the
column). Errors are OGC API exceptions (JSON): 400 invalid parameter, 404 unknown
collection, tile matrix set or tile, 406 a representation not offered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tileserver.config import FORMATS, Layer
from tileserver.errors import OWSException, not_found
from tileserver.grid import Grid
from tileserver.negotiation import negotiate, not_acceptable
from tileserver.ogcapi import JSON, PREFIX, OgcApi
from tileserver.tilematrixsets import layer_grids, layer_on
from tileserver.web.handlers import answer_tile as tile_response
from tileserver.web.handlers import backends_of, base_url, ignore_expect
from tileserver.web.headers import CORS
from tileserver.web.problems import ERROR_FORMAT, JSON_ERRORS
from tileserver.wmts import tile_request

Handler = Callable[[web.Request], Any]

_METADATA = {"json": JSON}
_NEGOTIATED = {"Vary": "Accept"}


class _OgcApiHandlers:
    @staticmethod
    def _api(request: web.Request) -> OgcApi:
        request[ERROR_FORMAT] = JSON_ERRORS
        config = backends_of(request).config
        return OgcApi.of(config, config.server.url or base_url(request))

    @staticmethod
    def _json(request: web.Request, document: dict[str, Any]) -> web.Response:
        negotiate(request.query.get("f"), request.headers.get("Accept"), _METADATA)
        return web.Response(
            text=json.dumps(document),
            content_type=JSON,
            headers={**CORS, **_NEGOTIATED, "Cache-Control": "public, max-age=300"},
        )

    @staticmethod
    def _layer(api: OgcApi, name: str) -> Layer:
        layer = api.config.layers.get(name)
        if layer is None:
            raise not_found(f"No collection {name[:80]!r}: see {api.url}/collections")
        return layer

    async def unknown(self, request: web.Request) -> web.Response:
        api = self._api(request)
        raise not_found(f"No such resource: {request.path[:200]}: start at {api.url}/")

    async def landing(self, request: web.Request) -> web.Response:
        api = self._api(request)
        return self._json(request, api.landing_page())

    async def conformance(self, request: web.Request) -> web.Response:
        api = self._api(request)
        return self._json(request, api.conformance())

    async def tile_matrix_sets(self, request: web.Request) -> web.Response:
        api = self._api(request)
        return self._json(request, api.tile_matrix_sets())

    async def tile_matrix_set(self, request: web.Request) -> web.Response:
        api = self._api(request)
        tms_id = request.match_info["tms"]
        compatibility = request.query.get("compatibility")
        if compatibility not in (None, "tms-1.0"):
            raise OWSException(
                "InvalidParameterValue",
                f"Unknown compatibility {compatibility[:40]!r}: use 'tms-1.0'",
                "compatibility",
            )
        document = api.tile_matrix_set(tms_id, tms1_members=compatibility is not None)
        if document is None:
            raise not_found(f"No tile matrix set {tms_id[:80]!r}: see {api.url}/tileMatrixSets")
        return self._json(request, document)

    async def collections(self, request: web.Request) -> web.Response:
        api = self._api(request)
        return self._json(request, api.collections())

    async def collection(self, request: web.Request) -> web.Response:
        api = self._api(request)
        return self._json(request, api.collection(self._layer(api, request.match_info["layer"])))

    async def tilesets(self, request: web.Request) -> web.Response:
        api = self._api(request)
        return self._json(request, api.tilesets(self._layer(api, request.match_info["layer"])))

    async def tileset(self, request: web.Request) -> web.Response:
        api = self._api(request)
        layer = self._layer(api, request.match_info["layer"])
        grid = self._grid(api, layer, request.match_info["tms"])
        return self._json(request, api.tileset(layer, grid, layer.extension))

    @staticmethod
    def _grid(api: OgcApi, layer: Layer, tms_id: str) -> Grid:
        for grid in layer_grids(layer):
            if api.sets.id_of(grid) == tms_id:
                return grid
        offered = [api.sets.id_of(g) for g in layer_grids(layer)]
        raise not_found(
            f"Collection {layer.name!r} has no tileset in tile matrix set {tms_id[:80]!r}: "
            f"use one of {offered}"
        )

    async def tile(self, request: web.Request) -> web.Response:
        api = self._api(request)
        layer = self._layer(api, request.match_info["layer"])
        grid = self._grid(api, layer, request.match_info["tms"])
        col, dot, extension = request.match_info["col"].partition(".")
        offered = {e: m for e, m in FORMATS.items() if m == layer.mime_type}
        if dot:
            if extension.lower() not in offered:
                raise not_acceptable(
                    f"Tiles of {layer.name!r} are {layer.mime_type}: use .{layer.extension}"
                )
        else:
            negotiate(request.query.get("f"), request.headers.get("Accept"), offered)
        served = layer_on(layer, grid)
        if served is None:  # pragma: no cover - _grid only returns the layer's grids
            raise not_found(f"Collection {layer.name!r} is not served on {grid.name!r}")
        dimensions = {k.lower(): v for k, v in request.query.items() if k.lower() != "f"}
        try:
            parsed = tile_request(
                served,
                style=served.wmts_style,
                matrix_set=grid.name,
                matrix=request.match_info["matrix"],
                row=request.match_info["row"],
                col=col,
                dimensions=dimensions,
            )
        except OWSException as exc:
            raise _tile_error(exc) from exc
        return await tile_response(request, parsed, _NEGOTIATED)


def _tile_error(exc: OWSException) -> OWSException:
    """WMTS's GetTile errors as OGC API answers them (20-057, /req/core/tc-error): a tile
    matrix or a row/column outside the tile matrix set or its limits is 404; a row or
    column that is not an integer, or a dimension value that is not offered, is 400."""
    if exc.code == "TileOutOfRange" or exc.locator == "tilematrix":
        return OWSException(exc.code, exc.text, exc.locator, status=404)
    return exc


def setup_ogcapi(
    app: web.Application,
) -> None:
    """Adds the OGC API - Tiles routes under /ogcapi."""
    handlers = _OgcApiHandlers()
    collection = PREFIX + "/collections/{layer}"
    routes: list[tuple[str, Handler]] = [
        (PREFIX, handlers.landing),
        (PREFIX + "/", handlers.landing),
        (PREFIX + "/conformance", handlers.conformance),
        (PREFIX + "/tileMatrixSets", handlers.tile_matrix_sets),
        (PREFIX + "/tileMatrixSets/{tms}", handlers.tile_matrix_set),
        (PREFIX + "/collections", handlers.collections),
        (collection, handlers.collection),
        (collection + "/map/tiles", handlers.tilesets),
        (collection + "/map/tiles/{tms}", handlers.tileset),
        (collection + "/map/tiles/{tms}/{matrix}/{row}/{col}", handlers.tile),
        # [\s\S]: a path with an encoded newline gets the JSON 404 too.
        (PREFIX + r"/{tail:[\s\S]*}", handlers.unknown),
    ]
    for path, handler in routes:
        app.router.add_get(path, handler, expect_handler=ignore_expect)
