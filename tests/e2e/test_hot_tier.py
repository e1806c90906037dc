"""The in-process hot tier, on by default (`server.hot_cache_mb: 32`, `hot_cache_max_age:
2`), with a real memcached and `tileserver serve --workers 2`: repeats are answered from
process memory with the same bytes and validators as from Memcached, and a `flush_all`, a
`generate_tiles --update` or an `/admin/expire` shows in every process once the documented
2 s have passed (README, next to `flush_all`), also while the tile is asked for all along
(each process then reads its hot copy again from Memcached before its time is up)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_admin import ENV, call, square
from tests.e2e.test_on_demand import COL, ROW, assert_map_tile, tile_path
from tests.support.daemons import Memcached
from tests.support.images import same_tile
from tests.support.server import Response, TileServer, demo_config

pytestmark = pytest.mark.e2e

MAX_AGE = 2.0  # server.hot_cache_max_age's default, as the README documents it
MERC = 20037508.342789244


def default_config(memcached: Memcached, admin: bool = False) -> dict[str, Any]:
    """The demo configuration with the server's defaults: the hot tier on."""
    config = demo_config(memcached.address)
    del config["server"]["hot_cache_mb"]
    if admin:
        config["server"]["admin"] = {"enabled": True}
    return config


def warm(server: TileServer, path: str) -> Response:
    """Renders the tile, then asks for it until one process answers it from the hot tier
    (each of the two processes keeps what it served: the tier holds it at once)."""
    first = server.get(path)
    assert (first.status, first.headers["x-tile-source"]) == (200, "render")
    assert_map_tile(first.body)
    sources = []
    for _ in range(20):
        again = server.get(path)
        assert again.body == first.body
        assert again.headers["etag"] == first.headers["etag"]
        sources.append(again.headers["x-tile-source"])
        if sources.count("hot") >= 2:
            break
    assert "hot" in sources, sources
    return first


def after_the_delay(since: float) -> None:
    """Waits for the documented delay to pass since `since` (time.monotonic(), the clock
    the hot tier's expiry uses too): the property under test is the delay itself."""
    time.sleep(max(0.0, since + MAX_AGE - time.monotonic()) + 0.05)


def assert_rendered_again(server: TileServer, path: str, renders: int, body: bytes) -> None:
    """The first answer after the delay is a new render, whichever process answers, and
    no answer after it is the old copy of a hot tier (the pixels are the same: the map did
    not change; the renders count says which answer it was)."""
    fresh = server.get(path)
    assert (fresh.status, fresh.headers["x-tile-source"]) == (200, "render"), fresh.headers
    assert same_tile(fresh.body, body)  # a new render: the same pixels (tests/support/images)
    assert server.renders() == renders + 1
    for _ in range(6):
        again = server.get(path)
        assert again.headers["x-tile-source"] in ("hot", "memcached"), again.headers
    assert server.renders() == renders + 1


def test_hits_come_from_the_hot_tier_with_the_same_bytes_and_validators(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    server = tileserver(default_config(memcached), workers=2)
    path = tile_path(ROW, COL)
    first = warm(server, path)
    hot = next(
        r for r in (server.get(path) for _ in range(20)) if r.headers["x-tile-source"] == "hot"
    )
    assert hot.body == first.body
    for name in ("content-type", "cache-control", "access-control-allow-origin", "etag"):
        assert hot.headers[name] == first.headers[name], name
    assert hot.headers["content-type"] == "image/png"
    assert "expires" in hot.headers
    etag = hot.headers["etag"]
    unchanged = server.get(path, {"If-None-Match": etag})
    assert unchanged.status == 304 and unchanged.body == b""
    assert unchanged.headers["etag"] == etag
    assert "hot tiles: in-process tier of 32 MB, 2 s" in server.log()


def test_a_flush_all_shows_within_the_documented_delay(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    server = tileserver(default_config(memcached), workers=2)
    path = tile_path(ROW, COL)
    body = warm(server, path).body
    renders = server.renders()
    memcached.flush_all()
    flushed = time.monotonic()
    after_the_delay(flushed)
    assert_rendered_again(server, path, renders, body)


def last_modified(response: Response) -> float:
    return parsedate_to_datetime(response.headers["last-modified"]).timestamp()


def test_a_flush_all_shows_within_the_documented_delay_while_the_tile_is_asked_for(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    """Asked for all along, each process's hot copy reaches the second half of its time
    and is read again from Memcached: flushed there, it must not be kept on."""
    server = tileserver(default_config(memcached), workers=2)
    path = tile_path(ROW, COL)
    first = warm(server, path)
    rendered = last_modified(first)
    while time.time() < rendered + 1:  # a new render then has a later Last-Modified
        time.sleep(0.01)
    renders = server.renders()
    memcached.flush_all()
    flushed = time.monotonic()
    while time.monotonic() < flushed + MAX_AGE + 0.05:  # the documented delay, and a margin
        during = server.get(path)
        assert during.status == 200 and same_tile(during.body, first.body)
    for _ in range(10):
        after = server.get(path)
        assert after.status == 200 and same_tile(after.body, first.body)
        assert last_modified(after) > rendered, after.headers  # not the flushed copy
    assert server.renders() == renders + 1


def test_an_admin_expire_shows_within_the_documented_delay(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    server = tileserver(default_config(memcached, admin=True), workers=2, env=ENV)
    path = tile_path(ROW, COL)
    body = warm(server, path).body
    renders = server.renders()
    expired = time.monotonic()
    answer = call(server, "expire", {"layer": "osm", "geometry": square(ROW, COL), "zooms": "17"})
    assert answer.status == 200, answer.body
    after_the_delay(expired)
    assert_rendered_again(server, path, renders, body)


def test_generate_tiles_update_shows_within_the_documented_delay(
    memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    config = default_config(memcached)
    server = tileserver(config, workers=2)
    path = tile_path(ROW, COL)
    body = warm(server, path).body
    renders = server.renders()
    config_file = tmp_path / "update.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    span = 2 * MERC / 2**17
    x, y = -MERC + (COL + 0.5) * span, MERC - (ROW + 0.5) * span
    bbox = f"{x - 5},{y - 5},{x + 5},{y + 5}"
    started = time.monotonic()
    update = subprocess.run(
        [sys.executable, "-m", "tileserver", "generate", "--config", str(config_file),
         "--layer", "osm", "--update", "--bbox", bbox, "--zoom", "17"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert update.returncode == 0, update.stderr
    assert "invalidated 64 cached tiles" in update.stdout, update.stdout
    after_the_delay(started)
    assert_rendered_again(server, path, renders, body)
