"""Access and error logs: one line per request (layer, zoom, tile source, duration),
as text or as JSON objects, one per line."""

from __future__ import annotations

import json
import logging
import time
import time as _time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

ACCESS_LOGGER = "tileserver.access"
# Request keys: (layer, zoom level) set by the tile handlers; when the answer began.
TILE_INFO = web.RequestKey("tileserver.tile", tuple[str, int])
STARTED = web.RequestKey("tileserver.started", float)  # time.perf_counter()


class JsonFormatter(logging.Formatter):
    """Every record as one JSON object: time, level, logger, process, message and the
    fields passed in `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def setup_logging(log_format: str, verbose: bool = False) -> None:
    """Root logging to stderr as `text` or `json`."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class AccessLogger(AbstractAccessLogger):
    """One INFO line per request on the `tileserver.access` logger; the fields travel
    in `extra` too, so the JSON format carries them as keys."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        tile = request.get(TILE_INFO)
        started = request.get(STARTED)
        if started is not None:  # finer than the event loop's clock (1 ms with uvloop)
            time = _time.perf_counter() - started
        fields: dict[str, Any] = {
            "remote": request.remote,
            "method": request.method,
            "path": request.path_qs[:2000],
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 2),
        }
        if tile is not None:
            fields["layer"], fields["zoom"] = tile
            fields["source"] = response.headers.get("X-Tile-Source", "")
        self.logger.info(
            '%s "%s %s" %d %d %.1fms%s',
            fields["remote"],
            fields["method"],
            fields["path"],
            fields["status"],
            fields["bytes"],
            fields["duration_ms"],
            f" layer={tile[0]} zoom={tile[1]} source={fields['source']}" if tile else "",
            extra={"fields": fields},
        )
