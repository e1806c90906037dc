"""What one server process answers with: the backends of a configuration (`Backends`),
swapped whole on reload by the `Runtime`; the typed keys under which the application and
its requests carry them; and the middleware that gives each request its backends, times
it and counts it."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web

from tileserver import composition
from tileserver.config import Config
from tileserver.errors import ConfigError
from tileserver.protocols import (
    FeatureInfoSource,
    Metrics,
    Renderer,
    RenderPool,
    TileCache,
    TileStore,
)
from tileserver.services.cache_ring import CacheRing
from tileserver.services.capabilities import CapabilitiesService
from tileserver.services.invalidation import CacheExpiry
from tileserver.services.resilient_cache import ResilientCache
from tileserver.services.tiles import TileService
from tileserver.tile_request import FeatureInfoRequest, TileRequest
from tileserver.web.access_log import STARTED, TILE_INFO

log = logging.getLogger("tileserver.server")


def default_render_processes(config: Config, workers: int) -> int:
    if config.server.render_processes:
        return config.server.render_processes
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@dataclass(frozen=True, slots=True)
class Injected:
    """Backends a caller (a test, a benchmark) provides instead of the configured ones."""

    tile_cache: TileCache | None = None
    renderer: Renderer | None = None
    tile_stores: Mapping[str, TileStore] | None = None
    feature_info: FeatureInfoSource | None = None


@dataclass(eq=False)
class Backends:
    """Everything one configuration serves with; replaced as a whole on reload."""

    config: Config
    tiles: TileService
    capabilities: CapabilitiesService
    renderer: Renderer
    render_pool: RenderPool | None  # the configured one, checked by /ready; None if injected
    feature_info: FeatureInfoSource | None
    expiry: CacheExpiry  # of the tile cache, for /admin/expire
    stack: AsyncExitStack
    cache: CacheRing  # the tile cache of `tiles`
    in_use: int = 0  # requests being answered with these backends
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_use is 0
    # WMTS REST paths already parsed and validated against `config`: a hit parses nothing.
    rest_paths: dict[str, TileRequest | FeatureInfoRequest] = field(default_factory=dict)
    # The same for the tile paths of TMS, gmaps and XYZ (whole, without a query string).
    face_paths: dict[str, TileRequest] = field(default_factory=dict)

    def remember_path(
        self, path: str, parsed: TileRequest | FeatureInfoRequest
    ) -> TileRequest | FeatureInfoRequest:
        _keep(self.rest_paths, path, parsed)
        return parsed

    def remember_face_path(self, raw_path: str, parsed: TileRequest) -> None:
        """Keeps a TMS, gmaps or XYZ tile's path for the hot path, unless the router saw
        another path in it (`router_path_as_is`) or it has a query string."""
        if router_path_as_is(raw_path):
            _keep(self.face_paths, raw_path, parsed)


_REST_PATHS = 4096  # parsed paths kept per process (a few hundred bytes each)
_Parsed = TypeVar("_Parsed")


def _keep(paths: dict[str, _Parsed], path: str, parsed: _Parsed) -> None:
    if len(paths) >= _REST_PATHS:
        paths.clear()  # a crawl over many tiles: start again, bounded
    paths[path] = parsed


def router_path_as_is(raw_path: str) -> bool:
    """True when a request's raw path (with its query string, if any) is the path aiohttp's
    router matches: no query string, no percent-escape for it to unquote."""
    return "?" not in raw_path and "%" not in raw_path and "#" not in raw_path


async def open_backends(
    config: Config, render_processes: int, injected: Injected, metrics: Metrics | None
) -> Backends:
    """Opens the cache, the renderer and the stores of config; ConfigError when a Mapnik
    file does not load. Closed with `backends.stack`."""
    stack = AsyncExitStack()
    try:
        shared = config.shared_cache  # Memcached's or Redis's section, or None
        if injected.tile_cache is None:
            cache = await composition.open_tile_cache(config, metrics)
        else:
            cache = CacheRing([], ResilientCache(injected.tile_cache))
            log.warning("tile cache: %s", injected.tile_cache.name)
        stack.push_async_callback(cache.close)
        renderer = injected.renderer
        feature_info = injected.feature_info
        pool = None
        if renderer is None:
            pool = composition.render_pool(list(config.layers.values()), render_processes, config)
            await pool.start()
            log.warning("render pool: %d Mapnik process(es)", render_processes)
            renderer = pool
            feature_info = feature_info or pool
        stack.push_async_callback(renderer.close)
        if injected.tile_stores is None:
            stores = await composition.open_serving_stores(config, stack)
        else:
            stores = dict(injected.tile_stores)
        prefix = shared.prefix if shared else "tileserver/"
        tiles = TileService(
            cache,
            renderer,
            prefix,
            shared.lock_timeout if shared else 60.0,
            stores,
            on_render=None if metrics is None else metrics.rendered,
            hot=composition.hot_tiles(config, cache),
            hot_max_age=config.server.hot_cache_max_age,
            lock_lease=shared.lock_lease if shared else 5.0,
            notices=composition.release_notices(cache, stack),
        )
        expiry = CacheExpiry(cache, prefix, shared.pool_size if shared else 4, tiles.hot)
    except BaseException:
        await stack.aclose()
        raise
    capabilities = CapabilitiesService(config)
    return Backends(config, tiles, capabilities, renderer, pool, feature_info, expiry, stack, cache)


class Runtime:
    """The backends requests are answered with, swapped whole by `reload`: a request
    keeps the backends it started with, and old backends close once none uses them."""

    def __init__(
        self,
        config: Config,
        render_processes: int,
        injected: Injected,
        metrics: Metrics | None,
        load: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self.render_processes = render_processes
        self.injected = injected
        self.metrics = metrics
        self._load = load
        self._current: Backends | None = None
        self._retired: list[Backends] = []
        self._reloading = asyncio.Lock()
        self.failures: dict[str, tuple[float, str]] = {}  # dependency: (monotonic, message)
        self.reloads = 0  # successful reloads
        self.reload_attempts = 0  # finished reloads, successful or not
        self.last_reload_errors: list[str] = []
        self._closing: set[asyncio.Task[None]] = set()  # retired backends waiting to close

    @property
    def current(self) -> Backends:
        if self._current is None:
            raise RuntimeError("the backends are not open")
        return self._current

    async def open(self) -> None:
        self._current = await open_backends(
            self.config, self.render_processes, self.injected, self.metrics
        )

    async def close(self) -> None:
        """Closes every backend, at shutdown: renders nobody waits for any more are
        cancelled first (a render process still busy holds the render pool's close)."""
        backends, self._current = self._current, None
        every = [*self._retired, *([backends] if backends else [])]
        for old in every:
            await old.tiles.cancel_renders()
        for old in every:
            await old.stack.aclose()
        self._retired.clear()

    def acquire(self) -> Backends:
        backends = self.current
        backends.in_use += 1
        backends.idle.clear()
        return backends

    def release(self, backends: Backends) -> None:
        backends.in_use -= 1
        if backends.in_use == 0:
            backends.idle.set()

    def failed(self, dependency: str, message: str) -> None:
        self.failures[dependency] = (time.monotonic(), message)

    async def reload(self) -> list[str]:
        """Loads the configuration again; on success new requests use it (the old backends
        close in the background once no request uses them), else the old one keeps
        serving. The configuration's errors, [] when the new one is in use."""
        async with self._reloading:
            errors = await self._swap()
            self.reload_attempts += 1
            self.last_reload_errors = errors
        return errors

    async def _swap(self) -> list[str]:
        if self._load is None:
            log.error("reload: this server was not started from a configuration file")
            return ["this server was not started from a configuration file"]
        loop = asyncio.get_running_loop()
        try:
            config = await loop.run_in_executor(None, self._load)
            backends = await open_backends(
                config, self.render_processes, self.injected, self.metrics
            )
        except ConfigError as exc:
            log.error(
                "reload refused, the configuration in use keeps serving: %s",
                "; ".join(exc.messages),
                extra={"fields": {"errors": exc.messages}},
            )
            return exc.messages
        except Exception as exc:
            log.error("reload failed, the configuration in use keeps serving: %s", exc)
            return [f"reload failed: {exc}"]
        old = self.current
        if (config.server.host, config.server.port) != (old.config.server.host,
                                                        old.config.server.port):  # fmt: skip
            log.warning("reload: server.host and server.port take effect at the next restart")
        if (config.server.admin, config.server.shutdown_timeout) != (
            old.config.server.admin, old.config.server.shutdown_timeout):  # fmt: skip
            log.warning(
                "reload: server.admin and server.shutdown_timeout take effect at the next restart"
            )
        self.config = config
        self._current = backends
        self.reloads += 1
        log.warning("configuration reloaded: %d layer(s): %s", len(config.layers),
                    ", ".join(config.layers))  # fmt: skip
        self._retired.append(old)
        task = loop.create_task(self._close_when_idle(old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return []

    def requests_in_progress(self) -> int:
        """Requests being answered, with the current backends or retired ones."""
        return sum(b.in_use for b in [*self._retired, *([self._current] if self._current else [])])

    async def _close_when_idle(self, old: Backends) -> None:
        try:
            async with asyncio.timeout(old.config.server.render_timeout + 10):
                if old.in_use > 0:
                    await old.idle.wait()
                # Answer first: a render outlives the request that started it while it
                # writes its other tiles.
                await old.tiles.wait_renders()
        except TimeoutError:
            log.warning("reload: %d request(s) and %d render(s) still use the old configuration",
                        old.in_use, old.tiles.renders_in_progress)  # fmt: skip
        if old in self._retired:
            self._retired.remove(old)
            await old.stack.aclose()

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """Whether this process can answer tiles, and what is degraded."""
        report: dict[str, object] = {"config": str(self.config.source or "")}
        backends = self._current
        if backends is None:
            return False, {**report, "ready": False, "render_pool": "not started"}
        report["layers"] = list(backends.config.layers)
        degraded: dict[str, str] = {}
        ready = True
        if backends.render_pool is not None:
            problem, unavailable = await backends.render_pool.check()
            report["render_pool"] = problem or "up"
            ready = problem is None
            for layer, message in unavailable.items():
                degraded[f"layers.{layer} database"] = message
        cache = backends.cache
        await cache.probe()  # a server back since the last request is seen back now
        if cache.servers:
            report["tile_cache"] = {cache.name: cache.states()}
        degraded.update(cache.degraded())
        now = time.monotonic()
        for dependency, (when, message) in self.failures.items():
            if now - when < _DEGRADED_WINDOW:
                degraded[dependency] = f"failed {now - when:.0f} s ago: {message}"
        report["degraded"] = degraded
        report["ready"] = ready
        return ready, report


_DEGRADED_WINDOW = 30.0  # seconds a dependency's failure is reported by /ready

RUNTIME = web.AppKey("runtime", Runtime)

BACKENDS = web.RequestKey("tileserver.backends", Backends)  # the backends a request uses
FEATURE_INFO = web.RequestKey("tileserver.feature_info", bool)  # True for GetFeatureInfo
TILE_SOURCE = web.RequestKey("tileserver.tile_source", str)  # where a tile came from


def _endpoint(request: web.Request) -> str:
    path = request.path
    for service in ("wmts", "ogcapi", "tms", "gmaps", "xyz"):
        if path.startswith(f"/{service}"):
            return service
    if path in ("/health", "/ready", "/metrics"):
        return path[1:]
    return "other"


@web.middleware
async def requests_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Gives the request the current backends for its whole life (a reload meanwhile
    does not change them), and counts and times its answer."""
    runtime = request.app[RUNTIME]
    backends = runtime.acquire()
    request[BACKENDS] = backends
    start = request[STARTED] = time.perf_counter()
    try:
        response = await handler(request)
    finally:
        runtime.release(backends)
    metrics = runtime.metrics
    if metrics is not None:
        tile = request.get(TILE_INFO)
        if tile is None:
            endpoint = _endpoint(request)
        else:
            endpoint = "featureinfo" if request.get(FEATURE_INFO) else "tile"
            source = request.get(TILE_SOURCE)
            if source is not None:
                metrics.tile(tile[0], source)
        metrics.request(
            endpoint, response.status, time.perf_counter() - start, tile[0] if tile else ""
        )
    return response
