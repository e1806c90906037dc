"""JSON error bodies (OGC API exceptions, RFC 7807) for the endpoints that are not WMTS.

The error middleware answers an `OWSException` (and a failed render or store) with an OWS
ExceptionReport, unless the handler set `ERROR_FORMAT` on the request: the OGC API, TMS,
XYZ and TileJSON handlers set `JSON_ERRORS`.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web

from tileserver.errors import OWSException
from tileserver.ogcapi import problem
from tileserver.web.headers import CORS

_MAX_TEXT = 500  # client-supplied values are echoed in messages; keep bodies small


class JsonErrors:
    """OGC API exceptions: `{"type", "title", "status", "detail", "code"}`."""

    def response(self, exc: OWSException) -> web.Response:
        try:
            title = HTTPStatus(exc.status).phrase
        except ValueError:
            title = "Error"
        detail = exc.text if len(exc.text) <= _MAX_TEXT else exc.text[:_MAX_TEXT] + "..."
        body = problem(exc.status, title, detail, exc.code)
        return web.Response(
            text=json.dumps(body),
            status=exc.status,
            content_type="application/json",
            headers={**CORS, "Cache-Control": "no-store"},
        )


ERROR_FORMAT = web.RequestKey("tileserver.error_format", JsonErrors)
JSON_ERRORS = JsonErrors()
