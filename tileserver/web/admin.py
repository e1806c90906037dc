"""Operations for operators under /admin/: expire cached tiles, reload the configuration,
stats. Off by default (`server.admin.enabled`): then no route exists under /admin/, which
answers 404 like any unknown path.

When enabled, every request under /admin/, whatever its path and method, first needs
`Authorization: Bearer <token>`, the token being read from the environment variable
`server.admin.token_env` when the server starts (never from the configuration file, never
from the query string). Both sides are hashed with SHA-256 and the digests compared with
`hmac.compare_digest`, so the time taken tells nothing of the token or of its length. A
missing or wrong token is answered 401 with `WWW-Authenticate: Bearer` before the path,
the method or the body is looked at.

- `POST /admin/expire` `{"layer": L, "geometry": WKT or GeoJSON | "bbox": [4 numbers],
  "zooms": "15-18" | [15, 16], "grid": G, "dry_run": false}`: deletes from the tile cache
  every tile of the metatiles that intersect the area (default: the layer's bbox) at those
  levels (default: the layer's on-demand levels), on every grid of the layer (or on `grid`,
  whose CRS the area is then in), with `services/invalidation`, as
  `generate_tiles --update` does; answers the counts.
- `POST /admin/reload`: reads the configuration again, as SIGHUP does; answers the
  layers in use, or the configuration's errors (422) while the old one keeps serving.
- `GET /admin/stats`: layers, tile cache, render pool, requests under way, counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import HttpVersion11, web

from tileserver.config import AdminConfig
from tileserver.errors import CacheUnavailable, ConfigError
from tileserver.services.invalidation import InvalidationStats
from tileserver.web.expire_body import (
    EXPIRE_KEYS,
    Refused,
    expire_areas,
    expire_layer,
    expire_zooms,
    read_object,
)
from tileserver.web.runtime import Runtime

MIN_TOKEN_LENGTH = 16
MAX_EXPIRE_TILES = 5_000_000  # as generate_tiles --max-invalidate: beyond, flush the cache
RELOAD_WAIT = 120.0  # seconds a worker waits for the reload its master was asked for
_REALM = 'Bearer realm="tileserver admin"'
_NO_STORE = {"Cache-Control": "no-store"}


def admin_token(admin: AdminConfig, environ: Mapping[str, str]) -> str | None:
    """The admin token from environ: None when the admin operations are off; ConfigError
    naming the variable when they are on and it is unset, empty or too short."""
    if not admin.enabled:
        return None
    token = environ.get(admin.token_env, "")
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        state = "is not set" if admin.token_env not in environ else (
            "is empty" if not token.strip() else f"holds only {len(token.strip())} characters"
        )  # fmt: skip
        raise ConfigError(
            [
                f"server.admin.enabled is true but the environment variable {admin.token_env} "
                f"{state}: set it to a secret of at least {MIN_TOKEN_LENGTH} characters "
                "(e.g. `openssl rand -hex 32`), or disable server.admin"
            ]
        )
    return token.strip()


@dataclass(frozen=True)
class _Admin:
    runtime: Runtime
    digest: bytes  # SHA-256 of the token
    reload_all: Callable[[], bool] | None  # asks the master to reload every worker
    started: float


_ADMIN = web.AppKey("tileserver.admin", _Admin)


def setup_admin(
    app: web.Application,
    runtime: Runtime,
    token: str,
    reload_all: Callable[[], bool] | None = None,
) -> None:
    """Adds the /admin/ routes, answered only with `token` (see `admin_token`).

    `reload_all`, in a worker of `tileserver serve --workers N`, asks the master to reload
    every worker (and says whether it could); /admin/reload then reports this worker's.
    """
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError([f"server.admin: the token must have {MIN_TOKEN_LENGTH} characters"])
    app[_ADMIN] = _Admin(runtime, _digest(token), reload_all, time.monotonic())
    # One catch-all route: every path and method under /admin/ is authorized first.
    app.router.add_route("*", "/admin/{operation:.*}", _dispatch, expect_handler=_expect)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def _json(
    data: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        data, status=status, headers={**_NO_STORE, **(headers or {})}, dumps=_dumps
    )


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def _unauthorized(request: web.Request, digest: bytes) -> web.Response | None:
    """The 401 answer, or None when the request carries the token (RFC 6750)."""
    values = request.headers.getall("Authorization", [])
    scheme, _, given = values[0].strip().partition(" ") if len(values) == 1 else ("", "", "")
    if scheme.lower() != "bearer" or not given.strip():
        return _json(
            {"error": "authorization required: Authorization: Bearer <token>"},
            401,
            {"WWW-Authenticate": _REALM},
        )
    if not hmac.compare_digest(_digest(given.strip()), digest):
        return _json(
            {"error": "invalid token"},
            401,
            {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
        )
    return None


async def _expect(request: web.Request) -> None:
    """`Expect: 100-continue` (curl sends it before a large body) is answered only to a
    request with the token; any other Expect value is ignored (RFC 9110, 10.1.1)."""
    continues = request.headers.get("Expect", "").lower() == "100-continue"
    if continues and request.version == HttpVersion11 and _unauthorized(
        request, request.app[_ADMIN].digest) is None:  # fmt: skip
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the body starts after


_Handler = Callable[[web.Request, _Admin], Awaitable[web.Response]]


async def _dispatch(request: web.Request) -> web.Response:
    admin = request.app[_ADMIN]
    refused = _unauthorized(request, admin.digest)
    if refused is not None:
        return refused
    name = request.match_info["operation"]
    operation = _OPERATIONS.get(name)
    if operation is None:
        known = ", ".join(f"{m} /admin/{n}" for n, (m, _) in _OPERATIONS.items())
        return _json({"error": f"no admin operation {name!r} (known: {known})"}, 404)
    method, handler = operation
    if request.method != method:
        return _json(
            {"error": f"/admin/{name} takes {method}, not {request.method}"}, 405, {"Allow": method}
        )
    try:
        return await handler(request, admin)
    except Refused as exc:
        return _json({"error": str(exc), **exc.extra}, exc.status)


# --- expire ----------------------------------------------------------------------------------


async def _expire(request: web.Request, admin: _Admin) -> web.Response:
    data = await read_object(request)
    unknown = sorted(set(data) - set(EXPIRE_KEYS))
    if unknown:
        allowed = ", ".join(EXPIRE_KEYS)
        raise Refused(400, f"unknown key(s) {', '.join(unknown)} (allowed: {allowed})")
    backends = admin.runtime.current
    layer = expire_layer(backends.config, data)
    expiry = backends.expiry
    invalidations = [
        expiry.plan(variant, expire_zooms(variant, data.get("zooms")), area)
        for variant, area in expire_areas(layer, data)
    ]
    invalidations = [inv for inv in invalidations if inv.zooms] or invalidations[:1]
    if not invalidations[0].zooms:
        raise Refused(400, f"layer {layer.name!r} has no on-demand level: give `zooms` to expire")
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise Refused(400, f"dry_run: expected true or false, got {dry_run!r}")
    by_grid: dict[str, Any] = {}
    for invalidation in invalidations:
        levels = {}
        for z in invalidation.zooms:
            metatiles, tiles = invalidation.count(z)
            levels[str(z)] = {"metatiles": metatiles, "tiles": tiles}
        by_grid[invalidation.layer.grid.name] = {
            "zooms": list(invalidation.zooms),
            "levels": levels,
            "tiles": sum(level["tiles"] for level in levels.values()),
        }
    total = sum(grid["tiles"] for grid in by_grid.values())
    answer: dict[str, Any] = {"layer": layer.name}
    if len(by_grid) == 1:  # a layer on one grid: its levels (as before TCC's `grids`)
        answer.update({k: v for k, v in next(iter(by_grid.values())).items() if k != "tiles"})
    else:
        answer["grids"] = by_grid
    answer.update(tiles=total, cache=expiry.cache_name)
    if expiry.cache_name == "memory":
        answer["note"] = (
            f"no memcached nor redis_cache: only the in-process cache of server process "
            f"{os.getpid()} was expired"
        )
    if dry_run:
        return _json({**answer, "dry_run": True})
    if total > MAX_EXPIRE_TILES:
        raise Refused(
            400,
            f"{total} tiles to expire, more than {MAX_EXPIRE_TILES}: give a smaller area or "
            "fewer zooms, or flush the cache",
            **answer,
        )
    stats = InvalidationStats()
    try:
        await expiry.expire(invalidations, stats)
    except CacheUnavailable as exc:
        raise Refused(
            503,
            f"{expiry.cache_name} unavailable, the tiles were not all expired: {exc}",
            **answer,
            keys_done=stats.keys,
            deleted=stats.deleted,
        ) from None
    return _json({**answer, "deleted": stats.deleted, "seconds": round(stats.elapsed, 3)})


# --- reload ----------------------------------------------------------------------------------


async def _reload(request: web.Request, admin: _Admin) -> web.Response:
    runtime = admin.runtime
    if admin.reload_all is None:
        errors = await runtime.reload()
    else:
        # The master forwards SIGHUP to every worker, this one included: wait for ours.
        attempts = runtime.reload_attempts
        if not admin.reload_all():
            raise Refused(503, "the master process is gone: restart the server")
        deadline = time.monotonic() + RELOAD_WAIT
        while runtime.reload_attempts == attempts:
            if time.monotonic() > deadline:
                raise Refused(504, f"no reload within {RELOAD_WAIT:g} s")
            await asyncio.sleep(0.05)
        errors = runtime.last_reload_errors
    if errors:
        raise Refused(422, "reload refused, the configuration in use keeps serving",
                       errors=errors)  # fmt: skip
    config = runtime.config
    return _json(
        {"status": "reloaded", "config": str(config.source or ""), "layers": list(config.layers),
         "reloads": runtime.reloads}
    )  # fmt: skip


# --- stats -----------------------------------------------------------------------------------


async def _stats(request: web.Request, admin: _Admin) -> web.Response:
    runtime = admin.runtime
    ready, report = await runtime.readiness()
    backends = runtime.current
    config = backends.config
    resilient = backends.cache
    layers = {}
    for layer in config.layers.values():
        on_demand = [z for z in range(len(layer.grid.resolutions)) if layer.is_on_demand(z)]
        layers[layer.name] = {
            "type": layer.type,
            "grid": layer.grid.name,
            "levels": len(layer.grid.resolutions),
            "on_demand_levels": f"{on_demand[0]}-{on_demand[-1]}" if on_demand else "",
            "tile_store": layer.cache if layer.min_resolution_seed is not None else None,
            "expires_hours": layer.expires_hours,
        }
    metrics = runtime.metrics
    counters = None
    if metrics is not None:
        metrics.fold()
        counters = await asyncio.get_running_loop().run_in_executor(None, metrics.counters)
    return _json(
        {
            "pid": os.getpid(),
            "uptime_seconds": round(time.monotonic() - admin.started, 1),
            "config": report.get("config"),
            "reloads": runtime.reloads,
            "ready": ready,
            "layers": layers,
            "tile_cache": {
                "name": resilient.name,
                "available": resilient.available,
                "failures": resilient.failures,
                "servers": resilient.states(),
            },
            "render_pool": {
                "processes": runtime.render_processes,
                "state": report.get("render_pool", "none"),
            },
            "degraded": report.get("degraded", {}),
            "requests_in_progress": runtime.requests_in_progress() - 1,  # not this one
            "counters": counters,
        }
    )


_OPERATIONS: dict[str, tuple[str, _Handler]] = {
    "expire": ("POST", _expire),
    "reload": ("POST", _reload),
    "stats": ("GET", _stats),
}


def signal_master(master_pid: int) -> Callable[[], bool]:
    """`reload_all` of a worker: SIGHUP to its master, as long as it is still its parent
    (a master that died leaves the worker to init, which must not get the signal)."""

    def reload_all() -> bool:
        if os.getppid() != master_pid:
            return False
        os.kill(master_pid, signal.SIGHUP)
        return True

    return reload_all
