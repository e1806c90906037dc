"""The real application served in the test process: `create_app` with the configuration
`tileserver serve` would load, its Memcached, stores and Mapnik render processes, on a
loopback port, by an event loop in a thread of its own. It answers the same HTTP as a
`tileserver serve` process (see tests/support/server.py), without starting one.

A test that needs the process itself (signals, --workers, the exit status, kill -9, what
the command prints) uses TileServer; any other uses AppServer, which has the same
interface: `base`, `get()`, `log()`, `renders()`, `stop()`.

The Mapnik render processes of layers without a database are shared by the servers of
the session that load the same styles (`shared_pool`): starting them (a Python process
importing Mapnik and loading the styles) was most of a server's start. Layers with a
`connection` get processes of their own, as `tileserver serve` would start them: their
start checks the database (the tests of a database down at start-up look at that).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.support.daemons import free_port
from tests.support.server import RenderAwareClient
from tileserver.adapters.mapnik_renderer import MapnikRenderer, map_spec
from tileserver.adapters.renderers import LayerRenderer
from tileserver.adapters.wms_renderer import WmsRenderer
from tileserver.config import Config, UpstreamConfig
from tileserver.config_loader import load_config
from tileserver.log_format import TextFormatter
from tileserver.web.access_log import ACCESS_LOGGER, AccessLogger
from tileserver.web.admin import admin_token
from tileserver.web.app import create_app
from tileserver.web.hot_path import install_hot_path

_NUMBERS = count(1)
HANG = 120.0  # seconds: bounds a start or a stop, no expected duration
_KEPT_POOLS = 3  # distinct sets of styles whose render processes stay up for the session
_POOLS: dict[tuple[object, ...], MapnikRenderer] = {}  # by styles, processes and timeout
_WATCHING: set[int] = set()  # the servers whose log lines are collected now
_SAVED_LEVELS: dict[str, int] = {}  # the loggers' levels before the first of them


def shared_pool(config: Config, processes: int) -> MapnikRenderer | None:
    """Started render processes for config's Mapnik layers, shared with the other servers
    of the session that load the same styles; None when a layer has a database."""
    layers = list(config.layers.values())
    if any(layer.connection for layer in layers):
        return None
    key = (
        tuple(map_spec(layer) for layer in layers if layer.type == "mapnik" and layer.mapfile),
        processes,
        config.server.render_timeout,
    )
    pool = _POOLS.pop(key, None)
    if pool is None:
        pool = MapnikRenderer(layers, processes, config.server.render_timeout)
        asyncio.run(pool.start())
        while len(_POOLS) >= _KEPT_POOLS:
            oldest = next(iter(_POOLS))
            asyncio.run(_POOLS.pop(oldest).close())
    _POOLS[key] = pool  # the most recently used last
    return pool


def close_shared_pools() -> None:
    """Stops the shared render processes (at the end of the session)."""
    while _POOLS:
        asyncio.run(_POOLS.popitem()[1].close())


class _OnSharedPool(LayerRenderer):
    """The renderer `tileserver serve` builds (LayerRenderer), over shared render
    processes: its WMS client is the server's own, the processes outlive it."""

    def __init__(self, layers: list[Any], pool: MapnikRenderer, upstream: UpstreamConfig) -> None:
        self.processes = pool.processes
        self.mapnik = pool
        has_wms = any(layer.type == "wms" for layer in layers)
        self.wms = WmsRenderer(pool, upstream) if has_wms else None

    async def start(self) -> None:
        if self.wms is not None:
            await self.wms.start()

    async def close(self) -> None:
        if self.wms is not None:
            await self.wms.close()


class _Lines(logging.Handler):
    """The log lines this server's threads emit, formatted as `tileserver serve` writes
    them (TextFormatter)."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.DEBUG)
        self.prefix = prefix
        self.lines: list[str] = []
        self.setFormatter(TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName is not None and record.threadName.startswith(self.prefix):
            self.lines.append(self.format(record))


class AppServer(RenderAwareClient):
    """create_app(config) on http://127.0.0.1:<free port>, in a thread."""

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        render_processes: int = 1,
        env: Mapping[str, str] | None = None,
        hot_path: bool = True,
    ) -> None:
        """`hot_path`: False to answer every request through the application, as without
        `web.hot_path` (the tests that compare its answers with the application's)."""
        self.number = next(_NUMBERS)
        self.hot_path = hot_path
        self.config_path = workdir / f"config-{self.number}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.render_processes = render_processes
        self.env = dict(env or {})
        self.port = free_port()
        self.name = f"appserver-{self.number}"
        self._lines = _Lines(self.name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Loads the configuration and opens the backends as `tileserver serve` does;
        returns once the port answers. ConfigError as the command would report it."""
        config = load_config(self.config_path)
        token = admin_token(config.server.admin, {**os.environ, **self.env})
        pool = shared_pool(config, self.render_processes)
        self._watch_logs()
        loop = asyncio.new_event_loop()
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix=f"{self.name}-io"))
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        self._thread.start()

        async def serve() -> None:
            renderer = None
            if pool is not None:
                renderer = _OnSharedPool(list(config.layers.values()), pool, config.upstream)
                await renderer.start()
                logging.getLogger("tileserver.server").warning(
                    "render pool: %d Mapnik process(es) (shared)", pool.processes
                )
            app = create_app(
                config,
                render_processes=self.render_processes,
                renderer=renderer,
                feature_info=renderer,
                metrics=config.server.metrics,
                admin_token=token,
            )
            runner = web.AppRunner(
                app,
                handle_signals=False,
                access_log=logging.getLogger(ACCESS_LOGGER) if config.server.access_log else None,
                access_log_class=AccessLogger,
                shutdown_timeout=config.server.shutdown_timeout,
            )
            await runner.setup()  # opens the backends
            if self.hot_path:
                install_hot_path(runner)  # as `tileserver serve`
            self._runner = runner
            await web.TCPSite(runner, "127.0.0.1", self.port).start()

        try:
            asyncio.run_coroutine_threadsafe(serve(), loop).result(HANG)
        except BaseException:
            self.stop()
            raise

    @property
    def request_handler(self) -> object:
        """The handler of every request (`web.Server.request_handler`): a `HotPath` in
        front of the application's, unless started with hot_path=False."""
        assert self._runner is not None and self._runner.server is not None
        return self._runner.server.request_handler

    def _watch_logs(self) -> None:
        """INFO and above of the loggers a server writes, as its stderr would show them.
        The first server running sets the levels, the last one stopped sets them back."""
        if not _WATCHING:
            for name in ("tileserver", "aiohttp"):
                logger = logging.getLogger(name)
                _SAVED_LEVELS[name] = logger.level
                if logger.getEffectiveLevel() > logging.INFO:
                    logger.setLevel(logging.INFO)
        _WATCHING.add(self.number)
        logging.getLogger().addHandler(self._lines)

    def log(self) -> str:
        return "\n".join(self._lines.lines) + ("\n" if self._lines.lines else "")

    def stop(self) -> None:
        """Closes the site and the backends (render processes included), then the loop."""
        loop, self._loop = self._loop, None
        if loop is not None:
            runner, self._runner = self._runner, None
            if runner is not None:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(HANG)
            loop.call_soon_threadsafe(loop.stop)
            assert self._thread is not None
            self._thread.join(HANG)
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
        logging.getLogger().removeHandler(self._lines)
        if self.number in _WATCHING:
            _WATCHING.discard(self.number)
            if not _WATCHING:
                for name, level in _SAVED_LEVELS.items():
                    logging.getLogger(name).setLevel(level)
                _SAVED_LEVELS.clear()
