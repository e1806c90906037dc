"""What goes wrong while answering, and how it is answered: OWS exception reports for
the WMTS errors and the failed dependencies (JSON exceptions where the handler set
`problems.ERROR_FORMAT`: OGC API, TMS, XYZ), counted and reported by /ready; and the
HTTP parser's refusals, logged in one line."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tileserver.errors import (
    DatabaseUnavailable,
    OWSException,
    RenderError,
    StoreUnavailable,
    UpstreamError,
)
from tileserver.ows import CONTENT_TYPE as OWS_CONTENT_TYPE
from tileserver.ows import exception_report
from tileserver.web.access_log import STARTED, TILE_INFO
from tileserver.web.headers import CORS
from tileserver.web.problems import ERROR_FORMAT
from tileserver.web.runtime import BACKENDS, FEATURE_INFO, RUNTIME, Runtime

log = logging.getLogger("tileserver.server")


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


def quiet_parser_errors() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ParserErrorFilter) for f in logger.filters):
        logger.addFilter(_ParserErrorFilter())


def _endpoint(request: web.Request) -> str:
    path = request.path
    for service in ("wmts", "ogcapi", "tms", "gmaps", "xyz"):
        if path.startswith(f"/{service}"):
            return service
    if path in ("/health", "/ready", "/metrics"):
        return path[1:]
    return "other"


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    backends = runtime.acquire()
    request[BACKENDS] = backends
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
            endpoint = "featureinfo" if request.get(FEATURE_INFO) else "tile"
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
        return _error_response(request, exc)
    except (RenderError, StoreUnavailable) as exc:
        info = request.get(TILE_INFO)
        failure = _failure(exc, info[0] if info else "")
        if failure.logged_as is not None:
            log.error("%s failed for %s: %s", failure.logged_as, request.path_qs[:300], exc)
        runtime.failed(failure.dependency, str(exc))
        if metrics is not None:
            metrics.error(failure.label, failure.kind)
        failed = OWSException("NoApplicableCode", failure.text, None, failure.status)
        return _error_response(request, failed)
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
        internal = OWSException("NoApplicableCode", "Internal error", None, 500)
        return _error_response(request, internal)


@dataclass(frozen=True, slots=True)
class _Failure:
    """How a failed dependency is answered, logged, reported by /ready and counted."""

    dependency: str  # its name in /ready's `degraded`
    label: str  # its `dependency` label in tileserver_dependency_errors_total
    kind: str
    text: str  # of the OWS report
    status: int
    logged_as: str | None  # None: the adapter logged it already (with its retries)


_UPSTREAM = {
    503: "cannot be reached",
    504: "did not answer in time",
}  # for an UpstreamError without its `public` text


def _failure(exc: RenderError | StoreUnavailable, layer: str) -> _Failure:
    """The report names the failing dependency, never where it is (a host, a port, a
    database or a user name): that goes to the log and to /ready."""
    if isinstance(exc, UpstreamError):
        what = exc.public or _UPSTREAM.get(exc.status, "answered with an error or a broken image")
        text = f"The WMS of layer {layer!r} {what}"
        return _Failure("upstream", "upstream", str(exc.status), text, exc.status, None)
    if isinstance(exc, DatabaseUnavailable):
        text = f"Rendering failed: the database of layer {layer!r} cannot be reached"
        return _Failure("renderer", "renderer", "failed", text, 503, "render")
    if isinstance(exc, RenderError):
        text = f"Rendering failed for layer {layer!r}; the server's log says why"
        return _Failure("renderer", "renderer", "failed", text, 503, "render")
    text = "The tile store is unavailable"
    return _Failure("tile store", "store", "unavailable", text, 503, "tile store")


def _error_response(request: web.Request, exc: OWSException) -> web.Response:
    """An OWS ExceptionReport, or the format the handler chose (OGC API's JSON...)."""
    errors = request.get(ERROR_FORMAT)
    return ows_response(exc) if errors is None else errors.response(exc)


def ows_response(exc: OWSException) -> web.Response:
    return web.Response(
        body=exception_report(exc),
        status=exc.status,
        content_type=OWS_CONTENT_TYPE,
        charset="utf-8",
        headers=CORS,
    )
