"""The HTTP face: WMTS KVP and REST endpoints, the demo page; composes the backends."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from email.utils import formatdate
from importlib import resources
from pathlib import Path

from aiohttp import web

from tileserver.adapters.memcached import MemcachedCache
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.adapters.renderers import LayerRenderer
from tileserver.adapters.stores import store_for
from tileserver.config import Config
from tileserver.errors import OWSException, RenderError, StoreUnavailable, UpstreamError
from tileserver.ows import CONTENT_TYPE as OWS_CONTENT_TYPE
from tileserver.ows import exception_report
from tileserver.protocols import FeatureInfoSource, Renderer, TileCache, TileStore
from tileserver.services.capabilities import CapabilitiesService
from tileserver.services.resilient_cache import ResilientCache
from tileserver.services.tiles import Tile, TileService
from tileserver.tile_request import FeatureInfoRequest, TileRequest
from tileserver.wmts import CapabilitiesRequest, normalize_kvp, parse_kvp, parse_rest

log = logging.getLogger("tileserver.server")

CONFIG = web.AppKey("config", Config)
TILES = web.AppKey("tiles", TileService)
CAPABILITIES = web.AppKey("capabilities", CapabilitiesService)
FEATURE_INFO = web.AppKey("feature_info", FeatureInfoSource)

_CORS = {"Access-Control-Allow-Origin": "*"}


def static_dir() -> Path:
    return Path(str(resources.files("tileserver").joinpath("static")))


async def open_tile_cache(config: Config) -> tuple[TileCache, str]:
    """Memcached when configured and reachable, else the embedded LRU; and why."""
    memory = MemoryCache(config.server.memory_cache_mb * 1024 * 1024)
    embedded = f"embedded in-process LRU cache ({config.server.memory_cache_mb} MB)"
    if config.memcached is None:
        return memory, f"{embedded}: no memcached section in the config"
    memcached = MemcachedCache(config.memcached)
    alive = await memcached.ping()
    if not alive:
        await memcached.close()
        servers = ", ".join(memcached.addresses)
        return memory, f"{embedded}: memcached {servers} not reachable at start-up"
    return memcached, f"memcached {', '.join(memcached.addresses)}"


async def open_stores(config: Config, stack: AsyncExitStack) -> dict[str, TileStore]:
    """The tile stores that serve the pre-generated levels of some layer, each closed
    with the stack."""
    names = {
        layer.cache
        for layer in config.layers.values()
        if layer.cache is not None and layer.min_resolution_seed is not None
    }
    stores: dict[str, TileStore] = {}
    for name in sorted(names):
        store = store_for(config.caches[name])
        await store.open()
        stack.push_async_callback(store.close)
        log.warning("tile store %r: %r (pre-generated levels)", name, store)
        stores[name] = store
    return stores


def default_render_processes(config: Config, workers: int) -> int:
    if config.server.render_processes:
        return config.server.render_processes
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def create_app(
    config: Config,
    *,
    render_processes: int | None = None,
    tile_cache: TileCache | None = None,
    renderer: Renderer | None = None,
    tile_stores: Mapping[str, TileStore] | None = None,
    feature_info: FeatureInfoSource | None = None,
) -> web.Application:
    """Builds the application; backends open in its cleanup context, not here."""
    app = web.Application(middlewares=[_errors], handler_args={"max_field_size": 8190})
    app[CONFIG] = config
    app[CAPABILITIES] = CapabilitiesService(config)

    async def backends(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if tile_cache is None:
                cache, why = await open_tile_cache(config)
            else:
                cache, why = tile_cache, tile_cache.name
            stack.push_async_callback(cache.close)
            log.warning("tile cache: %s", why)
            started = renderer
            if started is None:
                processes = render_processes or default_render_processes(config, 1)
                layer_renderer = LayerRenderer(
                    list(config.layers.values()),
                    processes,
                    config.server.render_timeout,
                    config.upstream,
                )
                await layer_renderer.start()
                log.warning("render pool: %d Mapnik process(es)", processes)
                started = layer_renderer
                if feature_info is None:
                    app[FEATURE_INFO] = layer_renderer
            stack.push_async_callback(started.close)
            if feature_info is not None:
                app[FEATURE_INFO] = feature_info
            if tile_stores is None:
                stores = await open_stores(config, stack)
            else:
                stores = dict(tile_stores)
            memcached = config.memcached
            app[TILES] = TileService(
                ResilientCache(cache, memcached.retry_interval if memcached else 2.0),
                started,
                memcached.prefix if memcached else "tileserver/",
                memcached.lock_timeout if memcached else 60.0,
                stores,
            )
            yield

    app.cleanup_ctx.append(backends)
    app.router.add_get("/", _index)
    app.router.add_get("/wmts", _kvp)
    app.router.add_get("/wmts/", _kvp)
    app.router.add_get("/wmts/1.0.0/WMTSCapabilities.xml", _capabilities)
    app.router.add_get("/wmts/1.0.0/{path:.*}", _rest)
    app.router.add_static("/static/", static_dir(), follow_symlinks=False)
    return app


# --- handlers -------------------------------------------------------------------------------


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except OWSException as exc:
        return _ows_response(exc)
    except UpstreamError as exc:
        # Logged by the adapter, with its retries.
        return _ows_response(
            OWSException("NoApplicableCode", f"The upstream server failed: {exc}", None, exc.status)
        )
    except RenderError as exc:
        log.error("render failed for %s: %s", request.path_qs[:300], exc)
        return _ows_response(
            OWSException("NoApplicableCode", f"Rendering failed: {exc}", None, status=503)
        )
    except StoreUnavailable as exc:
        log.error("tile store failed for %s: %s", request.path_qs[:300], exc)
        return _ows_response(
            OWSException("NoApplicableCode", "The tile store is unavailable", None, status=503)
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("internal error on %s", request.path_qs[:300])
        return _ows_response(OWSException("NoApplicableCode", "Internal error", None, 500))


def _ows_response(exc: OWSException) -> web.Response:
    return web.Response(
        body=exception_report(exc),
        status=exc.status,
        content_type=OWS_CONTENT_TYPE,
        charset="utf-8",
        headers=_CORS,
    )


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(static_dir() / "index.html")


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _capabilities(request: web.Request) -> web.Response:
    body = request.app[CAPABILITIES].document(_base_url(request))
    return web.Response(
        body=body,
        content_type="application/xml",
        charset="utf-8",
        headers={**_CORS, "Cache-Control": "public, max-age=300"},
    )


async def _kvp(request: web.Request) -> web.Response:
    params = normalize_kvp(list(request.query.items()))
    parsed = parse_kvp(request.app[CONFIG], params)
    if isinstance(parsed, CapabilitiesRequest):
        return await _capabilities(request)
    if isinstance(parsed, FeatureInfoRequest):
        return await _feature_info(request, parsed)
    return await _tile(request, parsed)


async def _rest(request: web.Request) -> web.Response:
    parsed = parse_rest(request.app[CONFIG], request.match_info["path"])
    if isinstance(parsed, FeatureInfoRequest):
        return await _feature_info(request, parsed)
    return await _tile(request, parsed)


async def _feature_info(request: web.Request, info: FeatureInfoRequest) -> web.Response:
    source = request.app.get(FEATURE_INFO)
    if source is None:
        raise OWSException(
            "OperationNotSupported", "GetFeatureInfo is not available", "request", status=501
        )
    body, content_type = await source.feature_info(
        info.tile.layer, info.tile.coord, info.i, info.j, info.info_format
    )
    return web.Response(
        body=body,
        headers={**_CORS, "Content-Type": content_type or info.info_format,
                 "Cache-Control": "no-cache"},
    )  # fmt: skip


def _etag(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=10).hexdigest() + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


async def _tile(request: web.Request, tile_request: TileRequest) -> web.Response:
    tile: Tile = await request.app[TILES].get_tile(tile_request)
    ttl = tile_request.layer.ttl_seconds
    if tile.data is None:
        # A pre-generated tile that is not in the store (TileCloud-chain's answer).
        return web.Response(
            status=204, headers={**_CORS, "Cache-Control": f"public, max-age={ttl}",
                                 "X-Tile-Source": tile.source},
        )  # fmt: skip
    etag = _etag(tile.data)
    headers = {
        **_CORS,
        "Cache-Control": f"public, max-age={ttl}",
        "Expires": formatdate(time.time() + ttl, usegmt=True),
        "ETag": etag,
        "X-Tile-Source": tile.source,
    }
    inm = request.headers.get("If-None-Match")
    if inm is not None and _matches(inm, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=tile.data, content_type=tile_request.layer.mime_type, headers=headers)
