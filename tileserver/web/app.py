"""The HTTP face: WMTS KVP and REST endpoints, the demo page; composes the backends."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import signal
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from email.utils import formatdate
from importlib import resources
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tileserver.adapters.memcached import MemcachedCache
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.adapters.prometheus_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tileserver.adapters.prometheus_metrics import PrometheusMetrics
from tileserver.adapters.renderers import LayerRenderer
from tileserver.adapters.stores import store_for
from tileserver.config import Config
from tileserver.errors import (
    ConfigError,
    OWSException,
    RenderError,
    StoreUnavailable,
    UpstreamError,
)
from tileserver.ows import CONTENT_TYPE as OWS_CONTENT_TYPE
from tileserver.ows import exception_report
from tileserver.protocols import FeatureInfoSource, Renderer, TileCache, TileStore
from tileserver.services.capabilities import CapabilitiesService
from tileserver.services.resilient_cache import ResilientCache
from tileserver.services.tiles import Tile, TileService
from tileserver.tile_request import FeatureInfoRequest, TileRequest
from tileserver.web.access_log import STARTED, TILE_INFO
from tileserver.web.admin import setup_admin
from tileserver.wmts import CapabilitiesRequest, normalize_kvp, parse_kvp, parse_rest

log = logging.getLogger("tileserver.server")


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


def _hot_tiles(config: Config, cache: TileCache) -> MemoryCache | None:
    """The in-process hot tier, when configured and the tile cache is not in-process too."""
    if config.server.hot_cache_mb <= 0 or isinstance(cache, MemoryCache):
        return None
    log.warning(
        "hot tiles: in-process tier of %d MB, %g s", config.server.hot_cache_mb,
        config.server.hot_cache_max_age,
    )  # fmt: skip
    return MemoryCache(config.server.hot_cache_mb * 1024 * 1024)


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
    feature_info: FeatureInfoSource | None
    stack: AsyncExitStack
    in_use: int = 0  # requests being answered with these backends
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_use is 0


async def open_backends(
    config: Config, render_processes: int, injected: Injected, metrics: PrometheusMetrics | None
) -> Backends:
    """Opens the cache, the renderer and the stores of config; ConfigError when a Mapnik
    file does not load. Closed with `backends.stack`."""
    stack = AsyncExitStack()
    try:
        if injected.tile_cache is None:
            cache, why = await open_tile_cache(config)
        else:
            cache, why = injected.tile_cache, injected.tile_cache.name
        stack.push_async_callback(cache.close)
        log.warning("tile cache: %s", why)
        renderer = injected.renderer
        feature_info = injected.feature_info
        if renderer is None:
            layer_renderer = LayerRenderer(
                list(config.layers.values()),
                render_processes,
                config.server.render_timeout,
                config.upstream,
            )
            await layer_renderer.start()
            log.warning("render pool: %d Mapnik process(es)", render_processes)
            renderer = layer_renderer
            feature_info = feature_info or layer_renderer
        stack.push_async_callback(renderer.close)
        if injected.tile_stores is None:
            stores = await open_stores(config, stack)
        else:
            stores = dict(injected.tile_stores)
        memcached = config.memcached
        on_failure = None if metrics is None else lambda: metrics.error("memcached", "unavailable")
        tiles = TileService(
            ResilientCache(cache, memcached.retry_interval if memcached else 2.0, on_failure),
            renderer,
            memcached.prefix if memcached else "tileserver/",
            memcached.lock_timeout if memcached else 60.0,
            stores,
            on_render=None if metrics is None else metrics.rendered,
            hot=_hot_tiles(config, cache),
            hot_max_age=config.server.hot_cache_max_age,
        )
    except BaseException:
        await stack.aclose()
        raise
    return Backends(config, tiles, CapabilitiesService(config), renderer, feature_info, stack)


class Runtime:
    """The backends requests are answered with, swapped whole by `reload`: a request
    keeps the backends it started with, and old backends close once none uses them."""

    def __init__(
        self,
        config: Config,
        render_processes: int,
        injected: Injected,
        metrics: PrometheusMetrics | None,
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
        if old.in_use > 0:
            try:
                async with asyncio.timeout(old.config.server.render_timeout + 10):
                    await old.idle.wait()
            except TimeoutError:
                log.warning("reload: %d request(s) still use the old configuration", old.in_use)
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
        check = getattr(backends.renderer, "check", None)
        if check is not None:
            problem, unavailable = await check()
            report["render_pool"] = problem or "up"
            ready = problem is None
            for layer, message in unavailable.items():
                degraded[f"layers.{layer} database"] = message
        cache = backends.tiles.cache
        if not cache.available:
            degraded["tile cache"] = f"{cache.name} unavailable"
        now = time.monotonic()
        for dependency, (when, message) in self.failures.items():
            if now - when < _DEGRADED_WINDOW:
                degraded[dependency] = f"failed {now - when:.0f} s ago: {message}"
        report["degraded"] = degraded
        report["ready"] = ready
        return ready, report


_DEGRADED_WINDOW = 30.0  # seconds a dependency's failure is reported by /ready

RUNTIME = web.AppKey("runtime", Runtime)


def create_app(
    config: Config,
    *,
    render_processes: int | None = None,
    tile_cache: TileCache | None = None,
    renderer: Renderer | None = None,
    tile_stores: Mapping[str, TileStore] | None = None,
    feature_info: FeatureInfoSource | None = None,
    load: Callable[[], Config] | None = None,
    metrics: bool = True,
    admin_token: str | None = None,
    reload_all: Callable[[], bool] | None = None,
) -> web.Application:
    """Builds the application; backends open in its cleanup context, not here.

    `load` reads the configuration again: SIGHUP reloads it through that function.
    `admin_token` (see `web.admin.admin_token`) is needed when `server.admin.enabled`;
    `reload_all`, in a worker of a master, makes /admin/reload reload every worker.
    """
    _quiet_parser_errors()
    # Request line and each header bounded (aiohttp's defaults, explicit): a 400 beyond.
    limits = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 128}
    app = web.Application(middlewares=[_errors], handler_args=limits)
    prometheus = PrometheusMetrics() if metrics else None
    runtime = Runtime(
        config,
        render_processes or default_render_processes(config, 1),
        Injected(tile_cache, renderer, tile_stores, feature_info),
        prometheus,
        load,
    )
    app[RUNTIME] = runtime

    async def backends(app: web.Application) -> AsyncIterator[None]:
        await runtime.open()
        loop = asyncio.get_running_loop()
        if load is not None:
            tasks: set[asyncio.Task[list[str]]] = set()

            def on_hangup() -> None:
                log.warning("SIGHUP: reloading the configuration")
                task = loop.create_task(runtime.reload())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        try:
            yield
        finally:
            if load is not None:
                loop.remove_signal_handler(signal.SIGHUP)
            await runtime.close()

    app.cleanup_ctx.append(backends)
    routes: list[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("/", _index),
        ("/health", _health),
        ("/ready", _ready),
        ("/metrics", _metrics),
        ("/wmts", _kvp),
        ("/wmts/", _kvp),
        ("/wmts/1.0.0/WMTSCapabilities.xml", _capabilities),
        # [\s\S], not '.': a path with an encoded newline (%0A) gets an OWS report too.
        (r"/wmts/1.0.0/{path:[\s\S]*}", _rest),
    ]
    for path, handler in routes:
        app.router.add_get(path, handler, expect_handler=_ignore_expect)
    app.router.add_static(
        "/static/", static_dir(), follow_symlinks=False, expect_handler=_ignore_expect
    )
    if config.server.admin.enabled:
        if admin_token is None:
            raise ConfigError(
                [f"server.admin.enabled is true but no token was given (from the environment "
                 f"variable {config.server.admin.token_env})"]
            )  # fmt: skip
        setup_admin(app, runtime, admin_token, reload_all)
    return app


class _ParserErrorFilter(logging.Filter):
    """aiohttp logs every request its HTTP parser refuses (a bad request line, a header
    over the limits: answered 400) at ERROR with a traceback. The client is at fault, not
    the server: one WARNING line without the traceback, so that garbage costs the logs little.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.levelno > logging.WARNING:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            reason = " ".join(str(exc.message).split())[:300]
            record.msg, record.args = "refused a malformed request from %s: %d %s", (
                remote, exc.code, reason)  # fmt: skip
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _quiet_parser_errors() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ParserErrorFilter) for f in logger.filters):
        logger.addFilter(_ParserErrorFilter())


async def _ignore_expect(request: web.Request) -> None:
    """Every route is a GET, which has no body to wait for: the Expect header is ignored
    (RFC 9110, 10.1.1 allows it). aiohttp's own handler answers 417 to a value other than
    100-continue, and 500 to one that is not UTF-8 (its 417 text cannot be encoded)."""
    return None


# --- handlers -------------------------------------------------------------------------------

_BACKENDS = web.RequestKey("tileserver.backends", Backends)  # the backends a request uses


def _endpoint(request: web.Request) -> str:
    path = request.path
    if path.startswith("/wmts"):
        return "wmts"
    if path in ("/health", "/ready", "/metrics"):
        return path[1:]
    return "other"


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    backends = runtime.acquire()
    request[_BACKENDS] = backends
    start = request[STARTED] = time.perf_counter()
    try:
        response = await _answer(request, handler, runtime)
    finally:
        runtime.release(backends)
    metrics = runtime.metrics
    if metrics is not None:
        tile = request.get(TILE_INFO)
        if tile is None:
            endpoint = _endpoint(request)
        else:
            endpoint = "featureinfo" if request.get(_FEATURE_INFO) else "tile"
            source = response.headers.get("X-Tile-Source")
            if source is not None:
                metrics.tile(tile[0], source)
        metrics.request(
            endpoint, response.status, time.perf_counter() - start, tile[0] if tile else ""
        )
    return response


async def _answer(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    runtime: Runtime,
) -> web.StreamResponse:
    metrics = runtime.metrics
    try:
        return await handler(request)
    except OWSException as exc:
        return _ows_response(exc)
    except (RenderError, StoreUnavailable) as exc:
        failure = _failure(exc)
        if failure.logged_as is not None:
            log.error("%s failed for %s: %s", failure.logged_as, request.path_qs[:300], exc)
        runtime.failed(failure.dependency, str(exc))
        if metrics is not None:
            metrics.error(failure.label, failure.kind)
        return _ows_response(OWSException("NoApplicableCode", failure.text, None, failure.status))
    except web.HTTPException:
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
            # No file has a name too long for the file system: aiohttp's static route lets
            # the ENAMETOOLONG of its stat through (/static/ + 256 characters).
            raise web.HTTPNotFound() from exc
        log.exception("internal error on %s", request.path_qs[:300])
        if metrics is not None:
            metrics.error("server", "internal")
        return _ows_response(OWSException("NoApplicableCode", "Internal error", None, 500))


@dataclass(frozen=True, slots=True)
class _Failure:
    """How a failed dependency is answered, logged, reported by /ready and counted."""

    dependency: str  # its name in /ready's `degraded`
    label: str  # its `dependency` label in tileserver_dependency_errors_total
    kind: str
    text: str  # of the OWS report
    status: int
    logged_as: str | None  # None: the adapter logged it already (with its retries)


def _failure(exc: RenderError | StoreUnavailable) -> _Failure:
    if isinstance(exc, UpstreamError):
        text = f"The upstream server failed: {exc}"
        return _Failure("upstream", "upstream", str(exc.status), text, exc.status, None)
    if isinstance(exc, RenderError):
        text = f"Rendering failed: {exc}"
        return _Failure("renderer", "renderer", "failed", text, 503, "render")
    text = "The tile store is unavailable"
    return _Failure("tile store", "store", "unavailable", text, 503, "tile store")


def _backends(request: web.Request) -> Backends:
    backends: Backends = request[_BACKENDS]
    return backends


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


async def _health(request: web.Request) -> web.Response:
    """Liveness: the process answers (its event loop runs)."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def _ready(request: web.Request) -> web.Response:
    """Readiness: the configuration is loaded and the render pool answers; degraded
    dependencies are listed without making the process unready (it still serves)."""
    ready, report = await request.app[RUNTIME].readiness()
    report["reloads"] = request.app[RUNTIME].reloads
    return web.json_response(
        report, status=200 if ready else 503, headers={"Cache-Control": "no-store"}
    )


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[RUNTIME].metrics
    if metrics is None:
        raise web.HTTPNotFound()
    body = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
    return web.Response(
        body=body, headers={"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": "no-store"}
    )


# A Host header as RFC 9110 (7.2) allows it: a name or IPv4 address, or an IPv6 literal,
# and an optional port. Anything else (empty, spaces, quotes...) is not used in URLs.
_HOST_RE = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _base_url(request: web.Request) -> str:
    """The URL clients reach this server at (`server.url`, when set, wins over it in the
    Capabilities): from the Host header, else the address the request came in on."""
    host = request.headers.get("Host", "")
    if not _HOST_RE.fullmatch(host):
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            address = str(sockname[0])
            host = f"[{address}]:{sockname[1]}" if ":" in address else f"{address}:{sockname[1]}"
        else:
            host = "localhost"
    return f"{request.scheme}://{host}"


async def _capabilities(request: web.Request) -> web.Response:
    body = _backends(request).capabilities.document(_base_url(request))
    return web.Response(
        body=body,
        content_type="application/xml",
        charset="utf-8",
        headers={**_CORS, "Cache-Control": "public, max-age=300"},
    )


async def _kvp(request: web.Request) -> web.Response:
    params = normalize_kvp(list(request.query.items()))
    parsed = parse_kvp(_backends(request).config, params)
    if isinstance(parsed, CapabilitiesRequest):
        return await _capabilities(request)
    if isinstance(parsed, FeatureInfoRequest):
        return await _feature_info(request, parsed)
    return await _tile(request, parsed)


async def _rest(request: web.Request) -> web.Response:
    parsed = parse_rest(_backends(request).config, request.match_info["path"])
    if isinstance(parsed, FeatureInfoRequest):
        return await _feature_info(request, parsed)
    return await _tile(request, parsed)


_FEATURE_INFO = web.RequestKey("tileserver.feature_info", bool)  # True for GetFeatureInfo


async def _feature_info(request: web.Request, info: FeatureInfoRequest) -> web.Response:
    request[TILE_INFO] = (info.tile.layer.name, info.tile.coord.z)
    request[_FEATURE_INFO] = True
    source = _backends(request).feature_info
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


_EXPIRES: dict[int, tuple[int, str]] = {}  # ttl -> (second, its Expires date)


def _expires(ttl: int) -> str:
    """The Expires header of a tile served now, formatted once per second and TTL."""
    now = int(time.time())
    cached = _EXPIRES.get(ttl)
    if cached is not None and cached[0] == now:
        return cached[1]
    text = formatdate(now + ttl, usegmt=True)
    if len(_EXPIRES) > 64:
        _EXPIRES.clear()
    _EXPIRES[ttl] = (now, text)
    return text


def _etag(data: bytes) -> str:
    """A validator of the tile's bytes, the same in every process: its length, CRC-32 and
    Adler-32 (together a 64-bit check, compared only with earlier versions of the same
    tile; a fifth of blake2b's cost per hit)."""
    return f'"{len(data):x}-{zlib.crc32(data):08x}{zlib.adler32(data):08x}"'


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


async def _tile(request: web.Request, tile_request: TileRequest) -> web.Response:
    request[TILE_INFO] = (tile_request.layer.name, tile_request.coord.z)
    tile: Tile = await _backends(request).tiles.get_tile(tile_request)
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
        "Expires": _expires(ttl),
        "ETag": etag,
        "X-Tile-Source": tile.source,
    }
    # Several If-None-Match lines are one comma-separated list (RFC 9110, 5.3).
    inm = ",".join(request.headers.getall("If-None-Match", []))
    if inm and _matches(inm, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=tile.data, content_type=tile_request.layer.mime_type, headers=headers)
