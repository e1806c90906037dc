"""Access logs: one line per request (layer, zoom, tile source, duration), in the text
or JSON format of `tileserver.log_format`."""

from __future__ import annotations

import asyncio
import logging
import os
import time as _time
from typing import Any, TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from tileserver.log_format import TextFormatter

ACCESS_LOGGER = "tileserver.access"
# Request keys: (layer, zoom level) set by the tile handlers; when the answer began.
TILE_INFO = web.RequestKey("tileserver.tile", tuple[str, int])
STARTED = web.RequestKey("tileserver.started", float)  # time.perf_counter()


class _LineWriter:
    """Access lines in the text format, written to the root handler's stream once per
    event-loop iteration: the same lines as through `logging`, for a fraction of the
    cost (a LogRecord, a formatter and a locked write and flush per request were 15 %
    of a cache hit's time)."""

    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""
        self._prefix = f" [{os.getpid()}] INFO {ACCESS_LOGGER}: "

    def write(self, message: str) -> None:
        now = _time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(second))
        msecs = int((now - second) * 1000)
        self._lines.append(f"{self._stamp},{msecs:03d}{self._prefix}{message}\n")
        if len(self._lines) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: write now
                self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or full: access lines are not worth failing a request
        finally:
            handler.release()


_WRITERS: dict[tuple[int, int], _LineWriter] = {}  # by process and id of the root handler


def _line_writer(logger: logging.Logger) -> _LineWriter | None:
    """The fast path, when the access logger's records would only reach one plain text
    StreamHandler of the root logger: no handler, filter or level of its own in between."""
    root = logging.getLogger()
    if logger.handlers or logger.filters or not logger.propagate or logger.level:
        return None
    parent = logger.parent
    while parent is not None and parent is not root:
        if parent.handlers or parent.filters or not parent.propagate or parent.level:
            return None
        parent = parent.parent
    if len(root.handlers) != 1 or root.filters:
        return None
    handler = root.handlers[0]
    if (
        type(handler) is not logging.StreamHandler
        or type(handler.formatter) is not TextFormatter
        or handler.filters
        or handler.level > logging.INFO
    ):
        return None
    key = (os.getpid(), id(handler))  # a forked worker writes its own pid
    writer = _WRITERS.get(key)
    if writer is None:
        _WRITERS.clear()  # a new process or setup_logging: the older handlers are gone
        writer = _WRITERS[key] = _LineWriter(handler)
    return writer


class AccessLogger(AbstractAccessLogger):
    """One INFO line per request on the `tileserver.access` logger; the fields travel
    in `extra` too, so the JSON format carries them as keys."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._writer = _line_writer(logger)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        tile = request.get(TILE_INFO)
        started = request.get(STARTED)
        if started is not None:  # finer than the event loop's clock (1 ms with uvloop)
            time = _time.perf_counter() - started
        writer = self._writer
        if writer is not None:
            if self.logger.isEnabledFor(logging.INFO):
                where = (
                    f" layer={tile[0]} zoom={tile[1]} "
                    f"source={response.headers.get('X-Tile-Source', '')}"
                    if tile
                    else ""
                )
                writer.write(
                    f'{request.remote} "{request.method} {request.path_qs[:2000]}" '
                    f"{response.status} {response.body_length} {time * 1000:.1f}ms{where}"
                )
            return
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
