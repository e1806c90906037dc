"""End to end: a real memcached, the real application and its Mapnik render processes
(served in the test process, or by a `tileserver serve` process where the process itself
is tested: --workers, its exit status), tiles rendered on demand."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import aiohttp
import pytest
from PIL import Image

from tests.support.app_server import AppServer
from tests.support.daemons import Memcached
from tests.support.server import TileServer, demo_config
from tests.support.waiting import wait_until

# z17 over Monte-Carlo: all four tiles lie in the same 8x8 metatile (rows 47784..47791,
# cols 68240..68247), which holds buildings, roads and labels.
Z, ROW, COL = 17, 47790, 68240
NEIGHBOURS = [(47790, 68241), (47791, 68240), (47786, 68244)]
OTHER_METATILE = (47790, 68239)


def tile_path(row: int, col: int, z: int = Z, layer: str = "osm", grid: str = "epsg3857") -> str:
    return f"/wmts/1.0.0/{layer}/default/{grid}/{z}/{row}/{col}.png"


def tile_key(row: int, col: int, z: int = Z) -> str:
    return f"test/osm/default/epsg3857/{z}/{row}/{col}"


def assert_map_tile(body: bytes, size: int = 256) -> Image.Image:
    """A PNG of the right size that shows a map: many colours, not one flat fill."""
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(body))
    image.load()
    assert image.size == (size, size)
    rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=size * size) or []
    assert len(colours) > 20, f"only {len(colours)} colours: a blank tile?"
    most_common = max(count for count, _ in colours)
    assert most_common < 0.9 * size * size, "one colour covers 90% of the tile"
    return rgb


def test_cold_tile_is_rendered_then_neighbours_are_memcached_hits(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address))
    assert "tile cache: memcached" in server.log()

    first = server.get(tile_path(ROW, COL))
    assert first.status == 200
    assert first.headers["content-type"] == "image/png"
    assert first.headers["x-tile-source"] == "render"
    assert_map_tile(first.body)
    assert server.renders() == 1
    # The whole metatile was stored: 64 tiles, the requested one byte for byte.
    assert memcached.get(tile_key(ROW, COL)) == first.body
    assert memcached.stats()["curr_items"] >= 64

    for row, col in NEIGHBOURS:
        r = server.get(tile_path(row, col))
        assert r.status == 200
        assert r.headers["x-tile-source"] == "memcached"
        assert_map_tile(r.body)
        assert r.body == memcached.get(tile_key(row, col))
    assert server.renders() == 1, "a neighbour in the same metatile caused a render"

    # A tile of another metatile renders once more.
    other = server.get(tile_path(*OTHER_METATILE))
    assert other.headers["x-tile-source"] == "render"
    assert server.renders() == 2


def test_metatile_edges_match_between_neighbouring_metatiles(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    """The tiles either side of a metatile boundary join without a seam of background."""
    server = app_server(demo_config(memcached.address))
    left = assert_map_tile(server.get(tile_path(47790, 68239)).body)  # metatile cols 68232..
    right = assert_map_tile(server.get(tile_path(47790, 68240)).body)  # metatile cols 68240..
    assert server.renders() == 2
    # Compare the last column of the left tile with the first of the right one.
    differences = sum(
        1
        for y in range(256)
        if max(
            abs(a - b) for a, b in zip(left.getpixel((255, y)), right.getpixel((0, y)), strict=True)
        )
        > 60
    )
    assert differences < 40, f"{differences} rows differ sharply across the metatile edge"


def test_http_cache_headers_and_conditional_requests(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address))
    r = server.get(tile_path(ROW, COL))
    assert r.headers["cache-control"] == "public, max-age=14400"
    expires = parsedate_to_datetime(r.headers["expires"]).timestamp()
    assert abs(expires - (time.time() + 14400)) < 60
    assert r.headers["access-control-allow-origin"] == "*"
    etag = r.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]{16}"', etag)  # length, CRC-32, Adler-32

    again = server.get(tile_path(ROW, COL), {"If-None-Match": etag})
    assert again.status == 304
    assert again.body == b""
    assert again.headers["etag"] == etag

    changed = server.get(tile_path(ROW, COL), {"If-None-Match": '"something-else"'})
    assert changed.status == 200
    assert changed.body == r.body
    other = server.get(tile_path(*NEIGHBOURS[0]))
    assert other.headers["etag"] != etag


def test_short_expires_tiles_vanish_from_memcached(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    # expires is in hours: 0.001 h = 3.6 s, rounded to 4 s of TTL.
    server = app_server(demo_config(memcached.address, osm={"expires": 0.001}))
    r = server.get(tile_path(ROW, COL))
    assert r.headers["cache-control"] == "public, max-age=4"
    assert memcached.get(tile_key(ROW, COL)) is not None
    assert server.get(tile_path(*NEIGHBOURS[0])).headers["x-tile-source"] == "memcached"
    # Gone by themselves once their 4 s are over (memcached's clock may tick late).
    wait_until(lambda: memcached.get(tile_key(ROW, COL)) is None, "the tile's expiry")
    assert memcached.get(tile_key(ROW, COL)) is None
    assert memcached.get(tile_key(*NEIGHBOURS[0])) is None
    again = server.get(tile_path(*NEIGHBOURS[0]))
    assert again.status == 200
    assert again.headers["x-tile-source"] == "render"
    assert server.renders() == 2


async def _concurrent(base: str, paths: list[str]) -> list[tuple[int, str, bytes]]:
    # A new connection per request, so SO_REUSEPORT spreads them over server processes.
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(path: str) -> tuple[int, str, bytes]:
            async with session.get(base + path) as r:
                return r.status, r.headers.get("X-Tile-Source", ""), await r.read()

        return await asyncio.gather(*(one(p) for p in paths))


def _fifty_paths() -> list[str]:
    # 50 requests over 8 tiles of one cold metatile (rows 47788..47791, cols 68240..68241
    # all show the town), each of them several times.
    tiles = [(47788 + i % 4, 68240 + (i // 4) % 2) for i in range(50)]
    return [tile_path(row, col) for row, col in tiles]


@pytest.mark.parametrize("workers", [1, 2])
def test_fifty_concurrent_requests_on_one_cold_metatile_render_once(
    workers: int, memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    server = tileserver(demo_config(memcached.address), workers=workers)
    results = asyncio.run(_concurrent(server.base, _fifty_paths()))
    assert [status for status, _, _ in results] == [200] * 50
    for _, _, body in results:
        assert_map_tile(body)
    assert server.renders() == 1, server.log()
    sources = {source for _, source, _ in results}
    assert "render" in sources
    if workers == 2:
        pids = set(re.findall(r"\[(\d+)\] INFO tileserver.access", server.log()))
        assert len(pids) == 2, "both server processes should have taken requests"
    assert server.stop() == 0, "SIGTERM should end the server cleanly"


def test_flush_all_then_renders_again_and_stores(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address))
    assert server.get(tile_path(ROW, COL)).headers["x-tile-source"] == "render"
    memcached.flush_all()
    assert memcached.get(tile_key(ROW, COL)) is None
    r = server.get(tile_path(*NEIGHBOURS[0]))
    assert r.status == 200
    assert r.headers["x-tile-source"] == "render"
    assert_map_tile(r.body)
    assert server.renders() == 2
    assert memcached.get(tile_key(ROW, COL)) is not None
    assert server.get(tile_path(ROW, COL)).headers["x-tile-source"] == "memcached"


def test_memcached_killed_then_restarted(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address))
    assert server.get(tile_path(ROW, COL)).status == 200
    memcached.kill()

    # Down: every request is still a tile, never an error: rendered once, then kept in
    # the in-process cache while Memcached is away.
    sources = []
    for row, col in [(ROW, COL), *NEIGHBOURS]:
        r = server.get(tile_path(row, col))
        assert r.status == 200
        sources.append(r.headers["x-tile-source"])
        assert_map_tile(r.body)
    assert sources == ["render"] + ["memory"] * len(NEIGHBOURS)
    assert server.log().count("memcached unavailable") == 1, "one log line per outage"

    memcached.start()  # same port

    def stored_again() -> bool:
        # Each request may find memcached back (retry_interval 0.5 s) and store the tile.
        assert server.get(tile_path(*OTHER_METATILE)).status == 200
        return memcached.get(tile_key(*OTHER_METATILE)) is not None

    wait_until(stored_again, "the tile stored in the restarted memcached", interval=0.2)
    assert memcached.get(tile_key(*OTHER_METATILE)) is not None, "not stored after restart"
    assert "memcached is back" in server.log()
    hit = server.get(tile_path(*OTHER_METATILE))
    assert hit.headers["x-tile-source"] == "memcached"


def test_embedded_cache_when_memcached_is_not_configured_or_not_reachable(
    app_server: Callable[..., AppServer], closed_port: int
) -> None:
    server = app_server(demo_config(None))
    assert "embedded in-process LRU cache" in server.log()
    assert server.get(tile_path(ROW, COL)).headers["x-tile-source"] == "render"
    hit = server.get(tile_path(*NEIGHBOURS[0]))
    assert hit.headers["x-tile-source"] == "memory"
    assert_map_tile(hit.body)
    assert server.renders() == 1

    unreachable = app_server(demo_config(f"127.0.0.1:{closed_port}"))
    assert "not reachable at start-up" in unreachable.log()
    assert unreachable.get(tile_path(ROW, COL)).status == 200
    assert unreachable.get(tile_path(*NEIGHBOURS[0])).headers["x-tile-source"] == "memory"


def test_lv95_layer_renders_on_its_own_grid(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address))
    # 1 m resolution (level 25) over Monte-Carlo; rows from the top of the LV95 bbox.
    z = 25
    res = 1.0
    row = int((1350000 - 843000) / (256 * res))
    col = int((2599000 - 2420000) / (256 * res))
    r = server.get(tile_path(row, col, z=z, layer="osm_lv95", grid="epsg2056"))
    assert r.status == 200, r.body
    assert_map_tile(r.body)


def test_answer_first_fifty_concurrent_requests_one_render_identical_tiles(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    """50 requests at once for 50 tiles of one metatile, over two server processes: one
    render (the request that started it is answered as soon as its tile is encoded, the
    others once the metatile is written), every answer a map tile identical, byte for
    byte, to what the cache holds for it."""
    server = tileserver(demo_config(memcached.address), workers=2)
    coords = [(47784 + i % 8, 68240 + i // 8) for i in range(50)]

    async def fetch_all() -> list[tuple[int, str, bytes]]:
        async with aiohttp.ClientSession() as session:

            async def one(row: int, col: int) -> tuple[int, str, bytes]:
                async with session.get(server.base + tile_path(row, col)) as r:
                    return r.status, r.headers.get("X-Tile-Source", ""), await r.read()

            return await asyncio.gather(*(one(row, col) for row, col in coords))

    answers = asyncio.run(fetch_all())
    assert [status for status, _, _ in answers] == [200] * 50
    wait_until(lambda: server.renders() >= 1, "the render's log line")
    assert server.renders() == 1
    assert sorted(source for _, source, _ in answers).count("render") == 1
    for (row, col), (_, _, body) in zip(coords, answers, strict=True):
        with Image.open(io.BytesIO(body)) as image:  # some are all land: one colour
            assert (image.format, image.size) == ("PNG", (256, 256)), (row, col)
        assert body == memcached.get(tile_key(row, col)), (row, col)
    assert_map_tile(answers[coords.index((ROW, COL))][2])  # Monte-Carlo: a map
    assert "first tile answered after" in server.log()
