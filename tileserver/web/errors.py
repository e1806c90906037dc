"""What goes wrong while answering, and how it is answered: OWS exception reports for
the WMTS errors (JSON exceptions where the handler set `problems.ERROR_FORMAT`: OGC API,
TMS, XYZ), and for the failed dependencies after `FAILURES`, the one table of how each is
answered, logged, counted and reported by /ready; and the HTTP parser's refusals, logged
in one line."""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tileserver.errors import (
    DatabaseUnavailable,
    OWSException,
    RenderError,
    StoreUnavailable,
    TileServerError,
    UpstreamError,
)
from tileserver.ows import CONTENT_TYPE as OWS_CONTENT_TYPE
from tileserver.ows import exception_report
from tileserver.web.access_log import TILE_INFO
from tileserver.web.headers import CORS
from tileserver.web.problems import ERROR_FORMAT
from tileserver.web.runtime import RUNTIME

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


@dataclass(frozen=True, slots=True)
class Failure:
    """How a failed dependency is answered, logged, reported by /ready and counted. The
    report names the failing dependency, never where it is (a host, a port, a database
    or a user name): that goes to the log and to /ready."""

    dependency: str  # its name in /ready's `degraded`
    label: str  # its `dependency` label in tileserver_dependency_errors_total
    kind: str | None  # its `kind` label; None: the status answered
    text: str  # of the report: {layer!r} the layer asked for, {what} what the WMS did
    status: int | None  # None: the exception's own `status` (UpstreamError's)
    logged_as: str | None  # None: the adapter logged it already (with its retries)


# By exception type; an exception is answered after the first of its classes found here.
FAILURES: dict[type[TileServerError], Failure] = {
    UpstreamError: Failure(
        "upstream", "upstream", kind=None, text="The WMS of layer {layer!r} {what}",
        status=None, logged_as=None,
    ),
    DatabaseUnavailable: Failure(
        "renderer", "renderer", kind="failed",
        text="Rendering failed: the database of layer {layer!r} cannot be reached",
        status=503, logged_as="render",
    ),
    RenderError: Failure(
        "renderer", "renderer", kind="failed",
        text="Rendering failed for layer {layer!r}; the server's log says why",
        status=503, logged_as="render",
    ),
    StoreUnavailable: Failure(
        "tile store", "store", kind="unavailable", text="The tile store is unavailable",
        status=503, logged_as="tile store",
    ),
}  # fmt: skip
# What a WMS did, for an UpstreamError without its `public` text.
_UPSTREAM = {503: "cannot be reached", 504: "did not answer in time"}


def failure_of(exc: BaseException) -> Failure | None:
    for cls in type(exc).__mro__:
        found = FAILURES.get(cls)
        if found is not None:
            return found
    return None


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error a handler raises, answered: an OWS exception report, or the format the
    handler chose (or aiohttp's own answer to an HTTPException)."""
    try:
        return await handler(request)
    except OWSException as exc:
        return _error_response(request, exc)
    except web.HTTPException:
        raise
    except Exception as exc:
        runtime = request.app[RUNTIME]
        failure = failure_of(exc)
        if failure is not None:
            status, what = failure.status, ""
            if isinstance(exc, UpstreamError):  # the one entry without a status
                status = exc.status
                what = exc.public or _UPSTREAM.get(
                    exc.status, "answered with an error or a broken image"
                )
            assert status is not None
            if failure.logged_as is not None:
                log.error("%s failed for %s: %s", failure.logged_as, request.path_qs[:300], exc)
            runtime.failed(failure.dependency, str(exc))
            if runtime.metrics is not None:
                runtime.metrics.error(failure.label, failure.kind or str(status))
            info = request.get(TILE_INFO)
            text = failure.text.format(layer=info[0] if info else "", what=what)
            failed = OWSException("NoApplicableCode", text, None, status)
            return _error_response(request, failed)
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
            # No file has a name too long for the file system: aiohttp's static route lets
            # the ENAMETOOLONG of its stat through (/static/ + 256 characters).
            raise web.HTTPNotFound() from exc
        log.exception("internal error on %s", request.path_qs[:300])
        if runtime.metrics is not None:
            runtime.metrics.error("server", "internal")
        internal = OWSException("NoApplicableCode", "Internal error", None, 500)
        return _error_response(request, internal)


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
