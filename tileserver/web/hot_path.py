"""The hot path: a GET or HEAD of a tile that the hot tier holds, by WMTS REST, TMS, gmaps
or XYZ, answered before aiohttp's router and the middleware, with the same answer as the
application's handler (`handlers.tile_response`), the same access log line and the same
counts.

It answers only a path the application has parsed already (`Backends.rest_paths`,
`Backends.face_paths`), without a percent-escape (the router's unquoting then changes
nothing), a TMS, gmaps or XYZ one only without a query string (XYZ reads dimensions
there), and only from the hot tier: anything else (a miss, a parse, an error, another
route) goes on to the application. A hit so skips the router's match, the middleware and
the handlers' coroutines: the CPU a worker spends per hit is what keeps it runnable on a
busy machine (benchmarks/RESULTS.md, issue 15, phases 5 and 8).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from tileserver.config import Layer
from tileserver.tile_request import TileRequest
from tileserver.types import Tile
from tileserver.web.access_log import STARTED, TILE_INFO
from tileserver.web.handlers import TileHead, tile_head, tile_response
from tileserver.web.runtime import RUNTIME, TILE_SOURCE, Backends, Runtime, router_path_as_is

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

PREFIX = "/wmts/1.0.0/"  # the REST route's, `app.create_app`
_ROUTES = 4096  # paths remembered per process, as `Backends.rest_paths`


@dataclass(slots=True)
class _Route:
    """A REST path parsed as a tile, with the hot tier's read of it, and the headers of
    its last answer (`head`, reused within its second for the same tile where the layer's
    Cache-Control does not depend on the tile's age)."""

    layer: Layer
    tile_info: tuple[str, int]  # the access log's (layer, zoom)
    read: Callable[[], Tile | None]
    reuse: bool  # the layer has no stale windows
    any_query: bool  # WMTS REST: a query string changes nothing
    head: TileHead | None = None
    head_of: tuple[str, float | None, str] = ("", None, "")  # head's tile: ETag, time, source


class HotPath:
    """A request handler for aiohttp's `web.Server`: the hot tile, or `fallback` (the
    application's own handler)."""

    def __init__(self, runtime: Runtime, fallback: Handler) -> None:
        self._runtime = runtime
        self._fallback = fallback
        self._backends: Backends | None = None  # the ones _routes were made with
        self._routes: dict[str, _Route] = {}

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        response = self.answer(request)
        if response is None:
            return await self._fallback(request)
        return response

    def answer(self, request: web.BaseRequest) -> web.Response | None:
        """The answer of a hot tile, or None to let the application answer."""
        start = time.perf_counter()
        if request.method not in ("GET", "HEAD"):  # the methods of the REST route
            return None
        backends = self._runtime.current
        if backends.tiles.hot is None:  # no hot tier in this configuration
            return None
        path = request.raw_path
        plain = router_path_as_is(path)
        if not plain:
            path = request.rel_url.path_safe  # what the router matches
        route = self._route(backends, path)
        if route is None or not (plain or route.any_query):
            return None
        tile = route.read()
        if tile is None:
            return None
        request[STARTED] = start
        request[TILE_INFO] = route.tile_info
        request[TILE_SOURCE] = tile.source
        response = tile_response(request, route.layer, tile, head=self._head(route, tile))
        metrics = self._runtime.metrics
        if metrics is not None:
            name = route.tile_info[0]
            metrics.tile(name, tile.source)
            metrics.request("tile", response.status, time.perf_counter() - start, name)
        return response

    @staticmethod
    def _head(route: _Route, tile: Tile) -> TileHead | None:
        """The headers of route's answer of tile, made once per second; None when made
        for each answer."""
        if not route.reuse or tile.data is None:
            return None
        now = time.time()
        head = route.head
        of = (tile.etag, tile.modified, tile.source)
        if head is None or head.second != int(now) or route.head_of != of or not tile.etag:
            head = route.head = tile_head(route.layer, tile, tile.data, now)
            route.head_of = of
        return head

    def _route(self, backends: Backends, path: str) -> _Route | None:
        if backends is not self._backends:  # a reload: the new configuration's paths
            self._backends = backends
            self._routes = {}
        route = self._routes.get(path)
        if route is not None:
            return route
        if "%" in path:
            return None
        rest = path.startswith(PREFIX)
        parsed = (
            backends.rest_paths.get(path[len(PREFIX) :]) if rest else backends.face_paths.get(path)
        )
        if type(parsed) is not TileRequest:  # not parsed yet, or a GetFeatureInfo
            return None
        if len(self._routes) >= _ROUTES:
            self._routes.clear()
        layer = parsed.layer
        route = self._routes[path] = _Route(
            layer,
            (layer.name, parsed.coord.z),
            backends.tiles.hot_reader(parsed),
            reuse=not (layer.stale_while_revalidate or layer.stale_if_error),
            any_query=rest,
        )
        return route


def install_hot_path(runner: web.AppRunner) -> None:
    """Puts the hot path in front of the application of `runner`, once it is set up and
    before its sites start (a connection takes the server's handler when it opens). Not
    when the application has `on_response_prepare` handlers: the hot path's answers
    would not go through them."""
    server = runner.server
    if server is None:
        raise RuntimeError("install_hot_path: the runner is not set up")
    if runner.app.on_response_prepare:
        return
    server.request_handler = HotPath(runner.app[RUNTIME], server.request_handler)
