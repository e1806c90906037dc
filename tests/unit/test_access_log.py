"""The access line is the same through the fast text path and through `logging`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from tileserver.log_format import JsonFormatter, TextFormatter
from tileserver.web.access_log import ACCESS_LOGGER, TILE_INFO, AccessLogger

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] INFO tileserver\.access: "
    r'(?P<rest>\S+ "GET /wmts/1\.0\.0/osm/default/g/3/2/1\.png\?a=b" 200 5 [\d.]+ms'
    r" layer=osm zoom=3 source=hot)$"
)


@pytest.fixture
def root_stream() -> Iterator[tuple[io.StringIO, logging.StreamHandler[io.StringIO]]]:
    """The root logger's only handler, as `setup_logging` leaves it (pytest's own capture
    handler, which turns the fast path off, is set aside for the test)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.setLevel(logging.INFO)
    try:
        yield stream, handler
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def only(handler: logging.Handler) -> None:
    logging.getLogger().handlers[:] = [handler]


def access_line(logger: AccessLogger) -> None:
    request = make_mocked_request("GET", "/wmts/1.0.0/osm/default/g/3/2/1.png?a=b")
    request[TILE_INFO] = ("osm", 3)
    response = web.Response(body=b"12345", headers={"X-Tile-Source": "hot"})
    response._body_length = 5  # as after the response was sent
    logger.log(request, response, 0.0123)


def test_fast_text_path_writes_the_line_logging_would(
    root_stream: tuple[io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    stream, handler = root_stream
    handler.setFormatter(TextFormatter())
    only(handler)
    fast = AccessLogger(logging.getLogger(ACCESS_LOGGER), "")
    assert fast._writer is not None
    access_line(fast)  # no running loop: written at once
    fast_line = stream.getvalue().splitlines()
    # The same through logging: a filter on the handler turns the fast path off.
    handler.addFilter(lambda record: True)
    slow = AccessLogger(logging.getLogger(ACCESS_LOGGER), "")
    assert slow._writer is None
    access_line(slow)
    lines = stream.getvalue().splitlines()
    assert len(fast_line) == 1 and len(lines) == 2
    fast_match, slow_match = LINE.match(lines[0]), LINE.match(lines[1])
    assert fast_match and slow_match, lines
    assert fast_match["rest"] == slow_match["rest"]


def test_lines_written_in_one_loop_iteration_go_out_together(
    root_stream: tuple[io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    stream, handler = root_stream
    handler.setFormatter(TextFormatter())
    only(handler)
    logger = AccessLogger(logging.getLogger(ACCESS_LOGGER), "")

    async def main() -> tuple[str, str]:
        for _ in range(3):
            access_line(logger)
        before = stream.getvalue()
        await asyncio.sleep(0)
        return before, stream.getvalue()

    before, after = asyncio.run(main())
    assert before == "" and len(after.splitlines()) == 3
    assert all(LINE.match(line) for line in after.splitlines())


def test_json_logs_keep_the_fields(
    root_stream: tuple[io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    stream, handler = root_stream
    handler.setFormatter(JsonFormatter())
    only(handler)
    logger = AccessLogger(logging.getLogger(ACCESS_LOGGER), "")
    assert logger._writer is None
    access_line(logger)
    entry = json.loads(stream.getvalue())
    assert (entry["layer"], entry["zoom"], entry["source"], entry["status"]) == (
        "osm", 3, "hot", 200,
    )  # fmt: skip
