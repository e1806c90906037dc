"""The hot path (`web/hot_path.py`): a hot tile answered before aiohttp's router and the
middleware gives the same HTTP as the application. Two servers on one memcached, one
with the hot path and one without (`AppServer(hot_path=False)`), get the same raw
requests over sockets (HEAD, conditional requests, HTTP/1.0, keep-alive, Connection:
close, pipelining, Expect, a query string, other methods) and must answer the same
bytes but for the clock's headers (Date, Expires); the hot path must have answered the
hot tiles itself, with the same access log lines and the same Prometheus counts."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import pytest

from tests.e2e.test_on_demand import COL, ROW, Z, assert_map_tile, tile_path
from tests.e2e.test_operations import metrics, value
from tests.support.app_server import AppServer
from tests.support.daemons import Memcached
from tests.support.server import demo_config
from tileserver.web.hot_path import HotPath

pytestmark = pytest.mark.e2e

HANG = 60.0  # seconds: bounds a read from the server, no expected duration
TILES = [tile_path(ROW, COL + d) for d in range(3)]  # one metatile: one render


def hot_config(memcached: Memcached) -> dict[str, Any]:
    """The demo configuration with the hot tier on, its copies kept for the whole test
    (the default 2 s could pass between two requests on a busy machine)."""
    config = demo_config(memcached.address)
    config["server"]["hot_cache_mb"] = 32
    config["server"]["hot_cache_max_age"] = 3600
    return config


def read_answers(sock: socket.socket, heads: list[bool]) -> tuple[list[bytes], bool]:
    """The raw answers to requests sent on sock (True: a HEAD, whose answer has no body),
    each head and body; and whether the server closed the connection after them."""
    buffer = b""

    def more() -> bytes:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {buffer!r}")
        return chunk

    answers = []
    for head in heads:
        while b"\r\n\r\n" not in buffer:
            buffer += more()
        header, _, buffer = buffer.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        found = re.search(rb"\r\ncontent-length: *(\d+)", header, re.IGNORECASE)
        length = int(found.group(1)) if found and not head and status not in (204, 304) else 0
        while len(buffer) < length:
            buffer += more()
        answers.append(header + b"\r\n\r\n" + buffer[:length])
        buffer = buffer[length:]
    assert buffer == b"", buffer
    sock.settimeout(0.05)  # a close the server decided is already under way: a bound only
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return answers, closed


def exchange(server: AppServer, raw: bytes, heads: list[bool]) -> tuple[list[bytes], bool]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG) as sock:
        sock.sendall(raw)
        return read_answers(sock, heads)


def clockless(answer: bytes) -> bytes:
    """An answer without the values of the headers that follow the clock."""
    return re.sub(rb"\r\n(Date|Expires): [^\r]*", rb"\r\n\1: -", answer)


def request(method: str, path: str, version: str = "1.1", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def spy(server: AppServer) -> list[bool]:
    """Whether each request since was answered by the hot path (True) or went on to the
    application (False)."""
    handler = server.request_handler
    assert isinstance(handler, HotPath)
    answered: list[bool] = []
    answer = handler.answer

    def counted(request: Any) -> Any:
        response = answer(request)
        answered.append(response is not None)
        return response

    handler.answer = counted  # type: ignore[method-assign]
    return answered


def test_hot_tiles_get_the_applications_answers_byte_for_byte(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    config = hot_config(memcached)
    hot = app_server(config)
    plain = app_server(config, hot_path=False)
    first = hot.get(TILES[0])
    assert first.headers["x-tile-source"] == "render"
    assert_map_tile(first.body)
    for server in (hot, plain):  # into each process's hot tier (from the render, or memcached)
        for path in TILES:
            assert server.get(path).status == 200
        for path in TILES:
            assert server.get(path).headers["x-tile-source"] == "hot"
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    earlier = formatdate(0, usegmt=True)
    path = TILES[0]
    cases: list[tuple[str, bytes, list[bool], bool]] = [
        # (what, the raw request(s), HEAD or not for each answer, answered by the hot path)
        ("GET", request("GET", path), [False], True),
        ("HEAD", request("HEAD", path), [True], True),
        ("If-None-Match", request("GET", path, If_None_Match=etag), [False], True),
        ("If-None-Match list", request("GET", path, If_None_Match=f'"x", W/{etag}'), [False],
         True),
        ("If-None-Match *", request("HEAD", path, If_None_Match="*"), [True], True),
        ("If-None-Match other", request("GET", path, If_None_Match='"x"',
                                        If_Modified_Since=modified), [False], True),
        ("If-Modified-Since", request("GET", path, If_Modified_Since=modified), [False], True),
        ("If-Modified-Since earlier", request("GET", path, If_Modified_Since=earlier), [False],
         True),
        ("If-Modified-Since garbage", request("GET", path, If_Modified_Since="yesterday"),
         [False], True),
        ("HTTP/1.0", request("GET", path, "1.0"), [False], True),
        ("HTTP/1.0 keep-alive", request("GET", path, "1.0", Connection="keep-alive"), [False],
         True),
        ("Connection: close", request("GET", path, Connection="close"), [False], True),
        ("Origin", request("GET", path, Origin="https://example.com"), [False], True),
        ("Expect", request("GET", path, Expect="100-continue"), [False], True),
        ("query string", request("GET", path + "?SERVICE=WMTS&x=1"), [False], True),
        ("pipelined", request("GET", TILES[1]) + request("HEAD", TILES[2])
         + request("GET", path, If_None_Match=etag), [False, True, False], True),
        ("escaped", request("GET", path.replace(".png", "%2Epng")), [False], True),
        ("escaped slash", request("GET", path.replace("/68240", "%2F68240")), [False], False),
        ("POST", request("POST", path, Content_Length="0"), [False], False),
        ("bad path", request("GET", "/wmts/1.0.0/nosuch/default/epsg3857/17/1/1.png"),
         [False], False),
    ]  # fmt: skip
    for what, raw, heads, by_hot_path in cases:
        answered = spy(hot)
        got, closed = exchange(hot, raw, heads)
        expected, expected_closed = exchange(plain, raw, heads)
        assert [clockless(a) for a in got] == [clockless(a) for a in expected], what
        assert closed == expected_closed, what
        assert answered == [by_hot_path] * len(heads), what
        if by_hot_path:
            assert all(b"\r\nX-Tile-Source: hot\r\n" in answer for answer in got), what

    # What each answered: the statuses, the validators, the closes.
    assert exchange(hot, request("GET", path), [False])[0][0].startswith(b"HTTP/1.1 200 OK")
    head, closed = exchange(hot, request("HEAD", path, If_None_Match=etag), [True])
    assert head[0].startswith(b"HTTP/1.1 304 Not Modified") and not closed
    old, closed = exchange(hot, request("GET", path, "1.0"), [False])
    assert old[0].startswith(b"HTTP/1.0 200 OK") and closed
    assert old[0].endswith(first.body)
    _, closed = exchange(hot, request("GET", path, Connection="close"), [False])
    assert closed
    # A path the application has not parsed yet goes to it, and is answered hot after.
    answered = spy(hot)
    for _ in range(2):
        got, _ = exchange(hot, request("GET", tile_path(ROW, COL + 5)), [False])
        assert b"\r\nX-Tile-Source: hot\r\n" in got[0]
    assert answered == [False, True]


def test_hot_path_answers_are_logged_and_counted_as_the_applications(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    config = hot_config(memcached)
    hot = app_server(config)
    plain = app_server(config, hot_path=False)
    etag = hot.get(TILES[0]).headers["etag"]
    for server in (hot, plain):
        for path in TILES * 2:
            server.get(path)
    before = {server.port: metrics(server) for server in (hot, plain)}
    answered = spy(hot)
    sizes = {}
    for server in (hot, plain):
        for path in TILES:
            response = server.get(path)
            assert response.headers["x-tile-source"] == "hot"
            sizes[path] = len(response.body)
        assert server.get(TILES[0], {"If-None-Match": etag}).status == 304
    assert answered == [True] * 4
    for server in (hot, plain):
        after = metrics(server)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before[server.port], name, **labels)  # noqa: B023

        assert delta("tileserver_tiles_total", layer="osm", source="hot") == 4
        assert delta("tileserver_http_requests_total", endpoint="tile", status="200") == 3
        assert delta("tileserver_http_requests_total", endpoint="tile", status="304") == 1
        assert delta("tileserver_http_request_duration_seconds_count", endpoint="tile",
                     layer="osm") == 4  # fmt: skip

    def access_lines(server: AppServer) -> list[str]:
        """The last four tile lines, but for the time, the process and the duration."""
        lines = [line for line in server.log().splitlines() if "layer=osm" in line]
        return [re.sub(r"^.*?tileserver\.access: | \d+\.\dms", "", line) for line in lines[-4:]]

    lines = access_lines(hot)
    assert lines == access_lines(plain)
    for line, (path, status) in zip(lines, [(p, 200) for p in TILES] + [(TILES[0], 304)],
                                    strict=True):  # fmt: skip
        # The bytes written: the body and the head.
        found = re.fullmatch(rf'127.0.0.1 "GET {path}" {status} (\d+) layer=osm zoom=17 '
                             "source=hot", line)  # fmt: skip
        assert found is not None, line
        assert int(found.group(1)) > (sizes[path] if status == 200 else 0)


def test_tms_gmaps_and_xyz_tiles_take_the_hot_path_with_the_applications_answers(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    """MapCache's TMS and gmaps URLs and XYZ answer hot tiles on the hot path too, once the
    application has parsed their path, byte for byte as the application would; with a
    query string (XYZ's dimensions) they go to the application."""
    config = hot_config(memcached)
    hot = app_server(config)
    plain = app_server(config, hot_path=False)
    y = 2**Z - 1 - ROW  # TMS counts rows from the bottom
    faces = [
        f"/tms/1.0.0/osm@epsg3857/{Z}/{COL}/{y}.png",
        f"/gmaps/osm@epsg3857/{Z}/{COL}/{ROW}.png",
        f"/xyz/osm/epsg3857/{Z}/{COL}/{ROW}.png",
    ]
    first = hot.get(TILES[0])
    assert first.headers["x-tile-source"] == "render"
    assert_map_tile(first.body)
    etag = first.headers["etag"]
    for server in (hot, plain):
        answered = spy(hot)
        for path in faces:  # parsed by the application, from the hot tier
            response = server.get(path)
            assert response.status == 200 and response.body == first.body, path
        if server is hot:
            assert answered == [False] * len(faces)
    for path in faces:
        cases: list[tuple[str, bytes, list[bool], bool]] = [
            ("GET", request("GET", path), [False], True),
            ("HEAD", request("HEAD", path), [True], True),
            ("If-None-Match", request("GET", path, If_None_Match=etag), [False], True),
            ("HTTP/1.0", request("GET", path, "1.0"), [False], True),
            ("pipelined", request("GET", path) + request("HEAD", path), [False, True], True),
            ("query string", request("GET", path + "?x=1"), [False], False),
        ]
        for what, raw, heads, by_hot_path in cases:
            answered = spy(hot)
            got, closed = exchange(hot, raw, heads)
            expected, expected_closed = exchange(plain, raw, heads)
            assert [clockless(a) for a in got] == [clockless(a) for a in expected], (path, what)
            assert closed == expected_closed, (path, what)
            assert answered == [by_hot_path] * len(heads), (path, what)
            assert all(b"\r\nX-Tile-Source: hot\r\n" in answer for answer in got), (path, what)
        assert exchange(hot, request("GET", path, If_None_Match=etag), [False])[0][0].startswith(
            b"HTTP/1.1 304 Not Modified"
        )
