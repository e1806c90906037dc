"""The HTTP face: `create_app` builds the application of a configuration (its routes,
middleware and admin operations); the backends open in its cleanup context."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiohttp import web

from tileserver import composition
from tileserver.config import Config
from tileserver.errors import ConfigError
from tileserver.protocols import FeatureInfoSource, Renderer, TileCache, TileStore
from tileserver.web import handlers
from tileserver.web.admin import setup_admin
from tileserver.web.errors import errors_middleware, quiet_parser_errors
from tileserver.web.ogcapi import setup_ogcapi
from tileserver.web.runtime import (
    RUNTIME,
    Injected,
    Runtime,
    default_render_processes,
    requests_middleware,
)
from tileserver.web.tms import setup_tms

log = logging.getLogger("tileserver.server")


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
    quiet_parser_errors()
    # Request line and each header bounded (aiohttp's defaults, explicit): a 400 beyond.
    limits = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 128}
    app = web.Application(middlewares=[requests_middleware, errors_middleware], handler_args=limits)
    prometheus = composition.prometheus_metrics() if metrics else None
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
        ("/", handlers.index),
        ("/health", handlers.health),
        ("/ready", handlers.ready),
        ("/metrics", handlers.metrics),
        ("/wmts", handlers.kvp),
        ("/wmts/", handlers.kvp),
        ("/wmts/1.0.0/WMTSCapabilities.xml", handlers.capabilities),
        # [\s\S], not '.': a path with an encoded newline (%0A) gets an OWS report too.
        (r"/wmts/1.0.0/{path:[\s\S]*}", handlers.rest),
    ]
    for path, handler in routes:
        app.router.add_get(path, handler, expect_handler=handlers.ignore_expect)
    app.router.add_static(
        "/static/",
        handlers.static_dir(),
        follow_symlinks=False,
        expect_handler=handlers.ignore_expect,
    )
    setup_ogcapi(app)
    setup_tms(app)
    if config.server.admin.enabled:
        if admin_token is None:
            raise ConfigError(
                [f"server.admin.enabled is true but no token was given (from the environment "
                 f"variable {config.server.admin.token_env})"]
            )  # fmt: skip
        setup_admin(app, runtime, admin_token, reload_all)
    return app
