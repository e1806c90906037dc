"""The request handlers: WMTS KVP and REST (tiles, GetFeatureInfo, Capabilities), the
demo page, /health, /ready and /metrics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aiohttp import web

from tileserver import freshness
from tileserver.config import Layer
from tileserver.errors import OWSException
from tileserver.freshness import etag_of
from tileserver.tile_request import FeatureInfoRequest, TileRequest
from tileserver.types import Tile
from tileserver.web.access_log import TILE_INFO
from tileserver.web.headers import (
    CORS,
    expires_header,
    http_date,
    last_modified,
    not_modified,
)
from tileserver.web.runtime import BACKENDS, FEATURE_INFO, RUNTIME, TILE_SOURCE, Backends
from tileserver.wmts import CapabilitiesRequest, normalize_kvp, parse_kvp, parse_rest


def static_dir() -> Path:
    return Path(str(resources.files("tileserver").joinpath("static")))


async def ignore_expect(request: web.Request) -> None:
    """Every route is a GET, which has no body to wait for: the Expect header is ignored
    (RFC 9110, 10.1.1 allows it). aiohttp's own handler answers 417 to a value other than
    100-continue, and 500 to one that is not UTF-8 (its 417 text cannot be encoded)."""
    return None


# --- handlers -------------------------------------------------------------------------------
def backends_of(request: web.Request) -> Backends:
    backends: Backends = request[BACKENDS]
    return backends


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(static_dir() / "index.html")


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers (its event loop runs)."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: the configuration is loaded and the render pool answers; degraded
    dependencies are listed without making the process unready (it still serves)."""
    ready, report = await request.app[RUNTIME].readiness()
    report["reloads"] = request.app[RUNTIME].reloads
    return web.json_response(
        report, status=200 if ready else 503, headers={"Cache-Control": "no-store"}
    )


async def metrics(request: web.Request) -> web.Response:
    metrics = request.app[RUNTIME].metrics
    if metrics is None:
        raise web.HTTPNotFound()
    metrics.fold()  # this process's latest counts; the others fold theirs every iteration
    body = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
    return web.Response(
        body=body, headers={"Content-Type": metrics.content_type, "Cache-Control": "no-store"}
    )


# A Host header as RFC 9110 (7.2) allows it: a name or IPv4 address, or an IPv6 literal,
# and an optional port. Anything else (empty, spaces, quotes...) is not used in URLs.
_HOST_RE = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def base_url(request: web.Request) -> str:
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


async def capabilities(request: web.Request) -> web.Response:
    body = backends_of(request).capabilities.document(base_url(request))
    return web.Response(
        body=body,
        content_type="application/xml",
        charset="utf-8",
        headers={**CORS, "Cache-Control": "public, max-age=300"},
    )


async def kvp(request: web.Request) -> web.Response:
    params = normalize_kvp(list(request.query.items()))
    parsed = parse_kvp(backends_of(request).config, params)
    if isinstance(parsed, CapabilitiesRequest):
        return await capabilities(request)
    if isinstance(parsed, FeatureInfoRequest):
        return await answer_feature_info(request, parsed)
    return await answer_tile(request, parsed)


async def rest(request: web.Request) -> web.Response:
    backends = backends_of(request)
    path = request.match_info["path"]
    parsed = backends.rest_paths.get(path)
    if parsed is None:  # a mistake is not remembered: it raises here every time
        parsed = backends.remember_path(path, parse_rest(backends.config, path))
    if isinstance(parsed, FeatureInfoRequest):
        return await answer_feature_info(request, parsed)
    return await answer_tile(request, parsed)


async def answer_feature_info(request: web.Request, info: FeatureInfoRequest) -> web.Response:
    request[TILE_INFO] = (info.tile.layer.name, info.tile.coord.z)
    request[FEATURE_INFO] = True
    source = backends_of(request).feature_info
    if source is None:
        raise OWSException(
            "OperationNotSupported", "GetFeatureInfo is not available", "request", status=501
        )
    body, content_type = await source.feature_info(
        info.tile.layer, info.tile.coord, info.i, info.j, info.info_format
    )
    return web.Response(
        body=body,
        headers={**CORS, "Content-Type": content_type or info.info_format,
                 "Cache-Control": "no-cache"},
    )  # fmt: skip


def _cache_control(layer: Layer, rendered_at: float | None) -> tuple[str, int]:
    """The tile's Cache-Control and its max-age: computed per answer only where the layer
    has stale windows (what is left of each depends on the tile's age, RFC 5861)."""
    if layer.stale_while_revalidate or layer.stale_if_error:
        return freshness.cache_control(layer, rendered_at, time.time())
    plain = _PLAIN.get(layer.ttl_seconds)
    if plain is None:
        plain = _PLAIN[layer.ttl_seconds] = freshness.cache_control(layer, None, 0.0)
    return plain


_PLAIN: dict[int, tuple[str, int]] = {}  # by expiry: the Cache-Control of a layer without windows


async def answer_tile(
    request: web.Request, tile_request: TileRequest, vary: Mapping[str, str] | None = None
) -> web.Response:
    """One tile with its caching headers, for every protocol (WMTS, OGC API - Tiles, TMS,
    XYZ). `vary` goes on every answer (where the format was negotiated)."""
    layer = tile_request.layer
    request[TILE_INFO] = (layer.name, tile_request.coord.z)
    tile: Tile = await backends_of(request).tiles.get_tile(tile_request)
    request[TILE_SOURCE] = tile.source
    return tile_response(request, layer, tile, vary)


@dataclass(frozen=True, slots=True)
class TileHead:
    """The headers of a tile's answers made within one second (Expires counts from it):
    its 200 (`ok`) and its 304 (`not_modified`), with the validators they carry."""

    second: int  # the Unix second they were made in
    etag: str
    modified: int | None  # Last-Modified, whole seconds; None when unknown
    ok: dict[str, str]
    not_modified: dict[str, str]


def tile_head(
    layer: Layer, tile: Tile, data: bytes, now: float, vary: Mapping[str, str] | None = None
) -> TileHead:
    cache_control, max_age = _cache_control(layer, tile.rendered_at)
    etag = tile.etag or etag_of(data)  # the hot tier keeps it: a hit hashes nothing
    headers = {
        **CORS,
        **(vary or {}),
        "Cache-Control": cache_control,
        "Expires": expires_header(max_age),
        "ETag": etag,
        "X-Tile-Source": tile.source,
    }
    modified = last_modified(tile.modified, now)
    if modified is not None:
        headers["Last-Modified"] = http_date(modified)
    ok = {**headers, "Content-Type": layer.mime_type}
    return TileHead(int(now), etag, modified, ok, headers)


def tile_response(
    request: web.BaseRequest,
    layer: Layer,
    tile: Tile,
    vary: Mapping[str, str] | None = None,
    head: TileHead | None = None,
) -> web.Response:
    """The answer of a tile: a header every tile carries is added here (the hot path
    answers with it too, `head` made this second by `tile_head` for this tile)."""
    data = tile.data
    if data is None:
        # A pre-generated tile that is not in the store (TileCloud-chain's answer).
        cache_control = _cache_control(layer, tile.rendered_at)[0]
        return web.Response(
            status=204, headers={**CORS, **(vary or {}), "Cache-Control": cache_control,
                                 "X-Tile-Source": tile.source},
        )  # fmt: skip
    now = time.time()
    if head is None:
        head = tile_head(layer, tile, data, now, vary)
    if not_modified(request, head.etag, head.modified, now):
        return web.Response(status=304, headers=head.not_modified)
    return web.Response(body=data, headers=head.ok)
