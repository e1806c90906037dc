"""End to end: the admin operations (`server.admin`) of the real application (served in
the test process, or by `tileserver serve` for the start-up refusals and the reload of
every worker of a master) with a real memcached: off by default (404 like any unknown
path), a token from the environment or nothing, expire exactly the tiles of an area,
reload (one process or every worker of a master), stats. And what a hostile client cannot
do: reach the files around the server, flood the log with tracebacks, or break the
Capabilities' URLs with its Host header (docs/SECURITY.md)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from tests.e2e.test_on_demand import COL, OTHER_METATILE, ROW, assert_map_tile, tile_key, tile_path
from tests.support.app_server import AppServer
from tests.support.configs import MERC
from tests.support.daemons import Memcached, free_port
from tests.support.schemas import validate_capabilities
from tests.support.server import ROOT, Response, TileServer, demo_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

XLINK = "http://www.w3.org/1999/xlink"
TOKEN = "test-admin-token-0123456789abcdef"
ENV = {"TILESERVER_ADMIN_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def admin_config(memcached: Memcached, enabled: bool = True, **layers: Any) -> dict[str, Any]:
    config = demo_config(memcached.address, **layers)
    config.setdefault("server", {})["admin"] = {"enabled": enabled}
    return config


def call(
    server: TileServer | AppServer,
    operation: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> Response:
    """An admin request: POST with a JSON body, else GET; `headers` default to the token."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        server.base + "/admin/" + operation,
        data=data,
        headers=AUTH if headers is None else headers,
        method=method or ("POST" if data is not None else "GET"),
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        body_bytes = e.read()
        e.close()
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, body_bytes)


def post_raw(
    port: int,
    operation: str,
    body: bytes,
    expect: bytes = b"100-continue",
    token: str | None = TOKEN,
) -> tuple[int, bytes]:
    """A POST with an Expect header, byte for byte; the first status line and the rest."""
    head = (
        (
            f"POST /admin/{operation} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            + (f"Authorization: Bearer {token}\r\n" if token else "")
        ).encode()
        + b"Expect: "
        + expect
        + b"\r\n\r\n"
    )
    return raw(port, head + body)


def tile_bounds(row: int, col: int, z: int = 17) -> tuple[float, float, float, float]:
    span = 2 * MERC / 2**z
    minx, maxy = -MERC + col * span, MERC - row * span
    return minx, maxy - span, minx + span, maxy


def square(row: int, col: int, half: float = 5.0) -> str:
    """WKT of a small square at the centre of a z17 tile."""
    minx, miny, maxx, maxy = tile_bounds(row, col)
    x, y = (minx + maxx) / 2, (miny + maxy) / 2
    return (f"POLYGON(({x - half} {y - half}, {x + half} {y - half}, {x + half} {y + half}, "
            f"{x - half} {y + half}, {x - half} {y - half}))")  # fmt: skip


def test_admin_is_off_by_default_and_answers_like_any_unknown_path(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address), env=ENV)  # a token, but not enabled
    unknown = call(server, "../nosuch-path")
    assert unknown.status == 404
    for operation, body in (("stats", None), ("expire", {"layer": "osm"}), ("reload", b""),
                            ("", None), ("nosuch", b"{}")):  # fmt: skip
        for headers in ({}, AUTH):
            answer = call(server, operation, body, headers)
            assert (answer.status, answer.body) == (unknown.status, unknown.body), operation
            assert answer.headers["content-type"] == unknown.headers["content-type"]
            assert "www-authenticate" not in answer.headers


def serve(config_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TILESERVER_ADMIN_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "tileserver", "serve", "--config", str(config_path),
         "--port", str(free_port()), *args],
        capture_output=True, text=True, timeout=60, env={**environ, **env},
    )  # fmt: skip


def test_enabled_admin_without_a_good_token_refuses_to_start(
    memcached: Memcached, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    config = admin_config(memcached)
    path.write_text(yaml.safe_dump(config))
    for env, why in (({}, "is not set"), ({"TILESERVER_ADMIN_TOKEN": ""}, "is empty"),
                     ({"TILESERVER_ADMIN_TOKEN": "short"}, "holds only 5 characters")):  # fmt: skip
        result = serve(path, env=env)
        assert result.returncode == 1
        assert (
            "tileserver: cannot start: server.admin.enabled is true but the environment "
            f"variable TILESERVER_ADMIN_TOKEN {why}"
        ) in result.stderr
        assert "Traceback" not in result.stderr
    # Another variable, named in the configuration; a master refuses before any worker.
    config["server"]["admin"]["token_env"] = "MAPS_ADMIN"
    path.write_text(yaml.safe_dump(config))
    for args in ((), ("--workers", "2")):
        result = serve(path, *args, env=ENV)
        assert result.returncode == 1, result.stderr
        assert "environment variable MAPS_ADMIN is not set" in result.stderr
        assert "serving WMTS" not in result.stderr and "render pool" not in result.stderr


def test_without_the_token_nothing_admin_happens(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(admin_config(memcached), env=ENV)
    assert server.get(tile_path(ROW, COL)).headers["x-tile-source"] == "render"
    cached = memcached.get(tile_key(ROW, COL))
    assert cached is not None
    expire = {"layer": "osm", "geometry": square(ROW, COL), "zooms": "17"}
    wrong = "test-admin-token-0123456789abcdeX"  # same length, last character differs
    refusals = [
        ({}, "authorization required"),
        ({"Authorization": f"Bearer {wrong}"}, "invalid token"),
        ({"Authorization": f"Basic {TOKEN}"}, "authorization required"),
        ({"Authorization": "Bearer"}, "authorization required"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "invalid token"),
        ({"X-Admin-Token": TOKEN}, "authorization required"),
    ]
    for operation, body in (("expire", expire), ("reload", b""), ("stats", None),
                            ("nosuch", None), (f"stats?token={TOKEN}", None),
                            (f"stats?access_token={TOKEN}", None)):  # fmt: skip
        for headers, error in refusals:
            answer = call(server, operation, body, headers)
            assert answer.status == 401, (operation, headers, answer)
            assert answer.headers["www-authenticate"].startswith('Bearer realm="tileserver admin"')
            assert answer.headers["cache-control"] == "no-store"
            assert json.loads(answer.body)["error"].startswith(error)
            assert TOKEN.encode() not in answer.body
    # Expect: no "100 Continue" without the token, and no 417 or 500 for odd values.
    for expect in (b"100-continue", b"\xff\xfe", b"nonsense"):
        assert (
            post_raw(server.port, "expire", json.dumps(expire).encode(), expect, token=None)[0]
            == 401
        )
    # Nothing changed: the tile is still cached, nothing was rendered or reloaded.
    assert memcached.get(tile_key(ROW, COL)) == cached
    assert server.get(tile_path(ROW, COL)).headers["x-tile-source"] == "memcached"
    assert server.renders() == 1
    assert "configuration reloaded" not in server.log()
    assert json.loads(server.get("/ready").body)["reloads"] == 0


def test_expire_deletes_exactly_the_tiles_of_the_area(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(admin_config(memcached), env=ENV)
    other_row, other_col = OTHER_METATILE  # the metatile left of (ROW, COL)'s
    for row, col in ((ROW, COL), (other_row, other_col)):
        assert server.get(tile_path(row, col)).headers["x-tile-source"] == "render"
    lv95 = "/wmts/1.0.0/osm_lv95/default/epsg2056/20/198/69.png"  # in Monaco
    assert server.get(lv95).status == 200
    assert server.renders() == 3

    # A dry run counts only.
    dry = call(server, "expire", {"layer": "osm", "geometry": square(ROW, COL), "zooms": "17",
                                  "dry_run": True})  # fmt: skip
    assert dry.status == 200, dry.body
    assert json.loads(dry.body)["tiles"] == 64 and "deleted" not in json.loads(dry.body)
    assert memcached.get(tile_key(ROW, COL)) is not None

    answer = call(server, "expire", {"layer": "osm", "geometry": square(ROW, COL), "zooms": "17"})
    assert answer.status == 200, answer.body
    counts = json.loads(answer.body)
    assert counts["layer"] == "osm" and counts["zooms"] == [17] and counts["cache"] == "memcached"
    assert counts["levels"] == {"17": {"metatiles": 1, "tiles": 64}}
    assert counts["tiles"] == 64 and counts["deleted"] == 64  # the metatile's 64 were cached
    assert memcached.get(tile_key(ROW, COL)) is None
    assert memcached.get(tile_key(ROW + 1, COL + 7)) is None  # same metatile
    assert memcached.get(tile_key(other_row, other_col)) is not None  # the neighbour's stay

    # Requested again: the expired tile is rendered again, the others are cache hits.
    again = server.get(tile_path(ROW, COL))
    assert again.headers["x-tile-source"] == "render"
    assert_map_tile(again.body)
    assert server.get(tile_path(other_row, other_col)).headers["x-tile-source"] == "memcached"
    assert server.get(lv95).headers["x-tile-source"] == "memcached"
    assert server.renders() == 4

    # GeoJSON and bbox areas; levels by list; the whole layer at its on-demand levels.
    minx, miny, maxx, maxy = tile_bounds(other_row, other_col)
    point = {"type": "Point", "coordinates": [(minx + maxx) / 2, miny + 1]}
    feature = {"type": "Feature", "properties": {}, "geometry": point}
    answer = call(server, "expire", {"layer": "osm", "geometry": feature, "zooms": [17]})
    assert json.loads(answer.body)["deleted"] == 64
    assert memcached.get(tile_key(other_row, other_col)) is None
    # (a metatile that only touches the area counts: the bbox is kept 1 m inside the tile)
    inside = [minx + 1, miny + 1, maxx - 1, maxy - 1]
    answer = call(server, "expire", {"layer": "osm", "bbox": inside, "zooms": [16, 17]})
    assert json.loads(answer.body)["levels"] == {"16": {"metatiles": 1, "tiles": 64},
                                                 "17": {"metatiles": 1, "tiles": 64}}  # fmt: skip
    assert json.loads(answer.body)["deleted"] == 0  # already expired
    whole = json.loads(call(server, "expire", {"layer": "osm_lv95"}).body)
    assert whole["zooms"] == list(range(28)) and whole["deleted"] == 64
    assert server.get(lv95).headers["x-tile-source"] == "render"
    assert memcached.get(tile_key(ROW, COL)) is not None  # osm's left alone

    # With the token, `Expect: 100-continue` gets its 100 before the answer.
    dry_run = {"layer": "osm", "geometry": square(ROW, COL), "zooms": "17", "dry_run": True}
    status, rest = post_raw(server.port, "expire", json.dumps(dry_run).encode())
    assert status == 100 and b"HTTP/1.1 200 OK" in rest and b'"tiles": 64' in rest

    # Mistakes are named, and answered before anything is deleted.
    mistakes = [
        (b"not json", "the body is not JSON"),
        ([1, 2], "the body must be a JSON object"),
        ({"layer": "nosuch"}, "unknown layer 'nosuch' (defined: osm, osm_lv95)"),
        ({"layer": "osm", "zooms": "17-30"}, "zooms: zoom 30 does not exist"),
        ({"layer": "osm", "zooms": ["x"]}, "zooms: expected '15-18' or a list of levels"),
        ({"layer": "osm", "geometry": "POLYGON((", "zooms": "17"}, "geometry: not a GeoJSON"),
        ({"layer": "osm", "bbox": [0, 0, 1], "zooms": "17"}, "bbox: expected [minx, miny, maxx"),
        ({"layer": "osm", "bbox": [0, 0, 1, 1], "zooms": "17"}, "the area does not reach layer"),
        ({"layer": "osm", "geometry": "POINT(0 0)", "bbox": [0, 0, 1, 1]}, "give `geometry` or"),
        ({"layer": "osm", "zoom": 17}, "unknown key(s) zoom (allowed: layer, grid, geometry, bbox"),
        ({"layer": "osm", "zooms": "0-20", "geometry": "POLYGON((-2e7 -2e7, 2e7 -2e7, 2e7 2e7, "
          "-2e7 2e7, -2e7 -2e7))", "dry_run": "yes"}, "dry_run: expected true or false"),
    ]  # fmt: skip
    for body, error in mistakes:
        answer = call(server, "expire", body)
        assert answer.status == 400, (body, answer)
        assert json.loads(answer.body)["error"].startswith(error), (body, answer.body)
    assert memcached.get(tile_key(ROW, COL)) is not None
    too_big = b'{"layer": "osm", "zooms": "' + b"1" * 1024 * 1024 + b'"}'
    assert call(server, "expire", too_big).status == 413  # aiohttp's client_max_size, 1 MiB
    assert call(server, "expire", method="GET").status == 405
    assert call(server, "nosuch").status == 404

    # The cache down: 503, saying so.
    memcached.kill()
    down = call(server, "expire", {"layer": "osm", "geometry": square(ROW, COL), "zooms": "17"})
    assert down.status == 503, down.body
    assert json.loads(down.body)["error"].startswith("memcached unavailable")


def test_reload_reaches_every_worker_and_stats_answer(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    server = tileserver(admin_config(memcached), workers=2, env=ENV)
    assert server.get(tile_path(ROW, COL)).headers["cache-control"] == "public, max-age=14400"

    server.config_path.write_text(yaml.safe_dump(admin_config(memcached, osm={"expires": 2})))
    answer = call(server, "reload", b"")
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == {
        "status": "reloaded", "config": str(server.config_path.resolve()),
        "layers": ["osm", "osm_lv95"], "reloads": 1,
    }  # fmt: skip
    assert wait_until(
        lambda: server.log().count("configuration reloaded") == 2, "both reloads"
    )  # both, once
    for _ in range(6):
        assert server.get(tile_path(ROW, COL)).headers["cache-control"] == "public, max-age=7200"

    broken = admin_config(memcached)
    broken["layers"]["osm"]["meta_size"] = "eight"
    server.config_path.write_text(yaml.safe_dump(broken))
    refused = call(server, "reload", b"")
    assert refused.status == 422
    report = json.loads(refused.body)
    assert report["error"] == "reload refused, the configuration in use keeps serving"
    assert report["errors"] == ["layers.osm.meta_size: expected an integer, got str 'eight'"]
    assert wait_until(lambda: server.log().count("reload refused") == 2, "both refusals")
    assert server.get(tile_path(ROW, COL)).headers["cache-control"] == "public, max-age=7200"

    stats = call(server, "stats")
    assert stats.status == 200 and stats.headers["cache-control"] == "no-store"
    data = json.loads(stats.body)
    assert data["layers"]["osm"] == {
        "type": "mapnik", "grid": "epsg3857", "levels": 21, "on_demand_levels": "0-20",
        "tile_store": None, "expires_hours": 2.0,
    }  # fmt: skip
    assert data["tile_cache"] == {"name": "memcached", "available": True, "failures": 0,
                                  "servers": {memcached.address: "up"}}  # fmt: skip
    assert data["render_pool"] == {"processes": 1, "state": "up"}
    assert data["ready"] is True and data["reloads"] == 1 and data["requests_in_progress"] == 0
    # Counters of both processes (/metrics' multiprocess directory).
    assert data["counters"]["tileserver_renders_total"] == {"layer=osm": 1.0}
    requests = data["counters"]["tileserver_http_requests_total"]
    assert requests["endpoint=tile,status=200"] == 8


# --- what clients cannot reach or break -------------------------------------------------------


def raw(port: int, request: bytes) -> tuple[int, bytes]:
    """A request sent byte for byte (no client normalises `..`); (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def raw_get(port: int, target: bytes, host: bytes | None = b"127.0.0.1") -> tuple[int, bytes]:
    """A GET with that Host header; without one, in HTTP/1.0 (1.1 requires it)."""
    if host is None:
        return raw(port, b"GET " + target + b" HTTP/1.0\r\n\r\n")
    return raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: " + host
               + b"\r\nConnection: close\r\n\r\n")  # fmt: skip


def test_config_styles_data_and_the_package_are_never_served(
    memcached: Memcached, app_server: Callable[..., AppServer], tmp_path: Path
) -> None:
    config = admin_config(memcached)
    config["metadata"]["abstract"] = "CONFIG-MARKER-7d1e"
    server = app_server(config, env=ENV)
    package = ROOT / "tileserver"
    secrets = {
        "the config": b"CONFIG-MARKER-7d1e",
        "the style": (ROOT / "config" / "styles" / "osm.xml").read_bytes()[:60],
        "the data": (ROOT / "config" / "data" / "sea.geojson").read_bytes()[:60],
        "the schema": (package / "config.schema.json").read_bytes()[:60],
        "the code": (package / "web" / "app.py").read_bytes()[:60],
        "the template": (package / "templates" / "capabilities.xml.mako").read_bytes()[:60],
        "passwd": b"root:x:0:0",
    }
    assert raw_get(server.port, b"/static/demo.js")[0] == 200  # the static folder is served
    targets = [
        "/config.yaml", f"/{tmp_path.name}/config.yaml", "/static/../config.yaml",
        "/static/%2e%2e/config.schema.json", "/static/..%2fconfig.schema.json",
        "/static/%2e%2e%2fconfig.schema.json", "/static/vendor/../../config.schema.json",
        "/static/vendor/..%2f..%2fweb%2fapp.py", "/static/%2e%2e/templates/capabilities.xml.mako",
        "/static/..\\config.schema.json", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
        "/static/../../../../../../etc/passwd", "/tileserver/config.schema.json",
        "/config/styles/osm.xml", "/config/data/sea.geojson",
        "/static/../../config/data/sea.geojson",
        "/wmts/1.0.0/../../config/styles/osm.xml", "/wmts/1.0.0/%2e%2e/%2e%2e/config.yaml",
        "/wmts/1.0.0/osm/default/epsg3857/17/..%2f..%2f..%2fconfig/1.png",
        "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=../config&STYLE=default",
        "/admin/../config.yaml", "/admin/%2e%2e/config.yaml", "/static/", "/static",
        f"{server.config_path}", "/proc/self/environ", "/static/../../../../proc/self/environ",
    ]  # fmt: skip
    for target in targets:
        status, body = raw_get(server.port, target.encode())
        assert 400 <= status < 500, (target, status)
        for what, secret in secrets.items():
            assert secret not in body, f"{target} served {what}"
        assert TOKEN.encode() not in body, target  # nor the environment


def test_capabilities_urls_stay_absolute_whatever_the_host_header(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address))
    own = f"http://127.0.0.1:{server.port}/".encode()
    for host, base in ((b"", own), (None, own), (b'a"b<c', own), (b"x y", own),
                       (b"tiles.example.org:8080", b"http://tiles.example.org:8080/"),
                       (b"[::1]:80", b"http://[::1]:80/")):  # fmt: skip
        status, body = raw_get(server.port, b"/wmts/1.0.0/WMTSCapabilities.xml", host)
        assert status == 200, host
        root = etree.fromstring(body)
        urls = [value.encode() for element in root.iter() for name, value in element.attrib.items()
                if name in (f"{{{XLINK}}}href", "template")]  # fmt: skip
        ours = [url for url in urls if b"openstreetmap.org" not in url]  # the provider's
        assert len(ours) >= 4 and all(url.startswith(base) for url in ours), (host, urls)
        if base == own:
            validate_capabilities(body)


def test_malformed_requests_log_one_line_without_a_traceback(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address))
    ok = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
    malformed = [
        b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",  # a control character in the target
        b"GET /health HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 9000 + b"\r\n\r\n",  # over 8190
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",  # request line over 8190
        b"GET /health HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(130))
        + b"\r\n",  # over 128 headers
        b"GET /health HTTP/9.9\r\nHost: a\r\n\r\n",  # an unknown version
        ok + b"\x16\x03\x01 TLS after a request\r\n\r\n",  # garbage on a kept-alive connection
        b"POST /health HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]  # fmt: skip
    for request in malformed:
        assert raw(server.port, request)[0] == 400, request[:60]
    wait_until(
        lambda: server.log().count("refused a malformed request") >= 6,
        "the refusals logged",
        detail=server.log,
    )
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    refusals = [line for line in log.splitlines() if "refused a malformed request" in line]
    assert all(" WARNING aiohttp.server: refused a malformed request from 127.0.0.1: 400 " in line
               and len(line) < 500 for line in refusals), refusals  # fmt: skip
