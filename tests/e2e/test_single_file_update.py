"""`generate_tiles --update` and `--delete-empty` on the MBTiles and GeoPackage stores, as
on a folder (tests/e2e/test_update.py, test_generate_tiles.py), with Redis as the
on-demand cache: the stored tiles inside the area are redrawn and no other, the cached
ones there are deleted from a real `redis-server` and those outside stay; the stored
empty tiles of the selection are deleted and nothing else, the files staying valid. And a
server on Redis counts its hits and Redis's outage under `redis` in /metrics."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.test_operations import metrics, value
from tests.e2e.test_update import (
    CHANGED,
    ELSEWHERE,
    KEY_PREFIX,
    PREFIX,
    change_map,
    copy_map,
    expected_invalidation,
    generate,
    invalidated,
    key,
    metatile_tiles,
    tile_box,
    tile_of,
    update_config,
    write_area,
    write_yaml,
)
from tests.support.images import plant, planted_png
from tests.support.redis import RedisServer
from tests.support.server import TileServer, demo_config
from tests.support.waiting import wait_until
from tileserver import composition
from tileserver.config_loader import load_config

pytestmark = pytest.mark.e2e

KINDS = ["mbtiles", "geopackage"]
MBTILES = "tiles/1.0.0/osm/default/epsg3857.png.mbtiles"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own (not the session's: one test kills it)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def store_section(kind: str, workdir: Path) -> dict[str, str]:
    """An MBTiles folder (a file per layer, TileCloud-chain's names) or one GeoPackage."""
    if kind == "mbtiles":
        return {"type": "mbtiles", "folder": str(workdir / "tiles")}
    return {"type": "geopackage", "file": str(workdir / "tiles.gpkg")}


def read_file(file: Path, table: str, tms: bool) -> dict[tuple[int, int, int], bytes]:
    """(z, row from the top, col) -> bytes of a tile table, read with sqlite3 alone; the
    file must pass SQLite's integrity check."""
    with sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(f'SELECT zoom_level, tile_column, tile_row, tile_data FROM "{table}"')
        found = {(z, (1 << z) - 1 - r if tms else r, c): bytes(d) for z, c, r, d in rows}
    conn.close()
    return found


def stored(kind: str, workdir: Path) -> dict[str, bytes]:
    """The stored tiles of layer osm by tile path."""
    if kind == "mbtiles":
        tiles = read_file(workdir / MBTILES, "tiles", tms=True)
    else:
        tiles = read_file(workdir / "tiles.gpkg", "osm_default_epsg3857", tms=False)
    return {f"{PREFIX}/{z}/{row}/{col}.png": data for (z, row, col), data in tiles.items()}


def zrc(path: str) -> tuple[int, int, int]:
    z, row, col = path.removesuffix(".png").split("/")[-3:]
    return int(z), int(row), int(col)


def redis_keys(redis: RedisServer) -> set[str]:
    reply = redis.command("KEYS", "*")
    return {line for line in reply.split("\r\n") if line.startswith(KEY_PREFIX)}


# --- --update --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_update_redraws_the_area_in_the_file_and_invalidates_redis_there_only(
    kind: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    style = copy_map(tmp_path)
    data = update_config(tmp_path, style, None)
    data["caches"] = {"tiles": store_section(kind, tmp_path)}
    data["redis_cache"] = {"url": own_redis.url, "prefix": "test/"}
    config = write_yaml(tmp_path / "tileserver.yaml", data)
    first = generate(config, "--zoom", "16-17")
    assert first.returncode == 0, first.stderr
    before = stored(kind, tmp_path)
    inside = {p for p in before if tile_box(*zrc(p)).intersects(CHANGED)}
    assert {zrc(p)[0] for p in inside} == {16, 17}
    assert len(before) - len(inside) > 20

    # z18 tiles cached in Redis: a metatile in the area, and one elsewhere.
    z18_inside = tile_of(*CHANGED.centroid.coords[0], 18)
    z18_outside = tile_of(*ELSEWHERE, 18)
    assert z18_outside not in metatile_tiles(18, *z18_inside)
    for tile in metatile_tiles(18, *z18_inside) + metatile_tiles(18, *z18_outside):
        assert "OK" in own_redis.command("SET", key(18, *tile), "old", "EX", "3600")
    outside_keys = {key(18, *t) for t in metatile_tiles(18, *z18_outside)}

    change_map(style)
    area = write_area(tmp_path)
    dry = generate(config, "--geom", str(area), "--update", "--zoom", "16-20", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    address = own_redis.url.removeprefix("redis://")
    assert f"invalidate layer osm in redis {address}, zooms 18-20:" in dry.stdout
    assert stored(kind, tmp_path) == before and len(redis_keys(own_redis)) == 128

    update = generate(config, "--geom", str(area), "--update", "--zoom", "16-20")
    assert update.returncode == 0, update.stderr
    # Stored levels: the tiles that intersect the area were redrawn, no other one.
    after = stored(kind, tmp_path)
    assert set(after) == set(before)
    assert {p for p in before if after[p] != before[p]} == inside
    assert f"{len(inside)} tiles written" in update.stdout
    for path in inside:
        with Image.open(io.BytesIO(after[path])) as image:
            assert image.size == (256, 256)
    # On-demand levels: the cached metatile in the area is gone from Redis, the other stays.
    metatiles = sum(expected_invalidation(z)[0] for z in (18, 19, 20))
    assert invalidated(update) == (64, 64 * metatiles)
    assert redis_keys(own_redis) == outside_keys
    if kind == "mbtiles":
        with sqlite3.connect(tmp_path / MBTILES) as conn:
            metadata = dict(conn.execute("SELECT name, value FROM metadata"))
        conn.close()
        assert (metadata["minzoom"], metadata["maxzoom"]) == ("16", "17")


# --- --delete-empty --------------------------------------------------------------------------


def write_config(workdir: Path, kind: str, **osm: Any) -> Path:
    """Layer osm in the store; osm_lv95 too in the GeoPackage (MBTiles: Web Mercator only)."""
    lv95 = {"cache": "tiles"} if kind == "geopackage" else {}
    data = demo_config(None, osm={"cache": "tiles", **osm}, osm_lv95=lv95)
    data["caches"] = {"tiles": store_section(kind, workdir)}
    return write_yaml(workdir / "config.yaml", data)


@pytest.mark.parametrize("kind", KINDS)
def test_delete_empty_removes_the_stored_empty_tiles_of_the_selection_only(
    kind: str, tmp_path: Path
) -> None:
    empty, other = planted_png((170, 210, 230)), planted_png((255, 0, 0))
    planted = {
        f"{PREFIX}/14/5973/8529.png": empty,
        f"{PREFIX}/15/11948/17061.png": empty,
        f"{PREFIX}/15/11948/17060.png": other,
        f"{PREFIX}/16/23896/34122.png": empty,  # a level the command does not select
    }
    # Another layer of the same GeoPackage file.
    swiss = {"1.0.0/osm_lv95/default/epsg2056/15/1/1.png": empty} if kind == "geopackage" else {}
    config = write_config(tmp_path, kind)
    loaded = load_config(config)
    store = composition.tile_store(loaded.caches["tiles"], loaded)
    plant(store, {**planted, **swiss})
    assert stored(kind, tmp_path) == planted

    refused = generate(config, "--zoom", "13-15", "--delete-empty")
    assert refused.returncode == 1
    assert "layers.osm.empty_tile_detection is not set" in refused.stderr

    detection = {"size": len(empty), "hash": hashlib.sha1(empty).hexdigest()}
    config = write_config(tmp_path, kind, empty_tile_detection=detection)
    result = generate(config, "--zoom", "13-15", "--delete-empty")
    assert result.returncode == 0, result.stderr
    assert "deleted: 2 empty tiles of 3 checked" in result.stdout
    left = {p: planted[p] for p in (f"{PREFIX}/15/11948/17060.png", f"{PREFIX}/16/23896/34122.png")}
    assert stored(kind, tmp_path) == left
    if kind == "mbtiles":
        with sqlite3.connect(tmp_path / MBTILES) as conn:
            metadata = dict(conn.execute("SELECT name, value FROM metadata"))
        conn.close()
        assert (metadata["minzoom"], metadata["maxzoom"]) == ("15", "16")  # z14 is gone
    else:
        lv95 = read_file(tmp_path / "tiles.gpkg", "osm_lv95_default_epsg2056", tms=False)
        assert lv95 == {(15, 1, 1): empty}  # another layer of the same file: untouched


# --- a server on Redis -------------------------------------------------------------------------


def test_a_server_on_redis_counts_hits_and_redis_errors_under_redis(
    own_redis: RedisServer, tileserver: Callable[..., TileServer]
) -> None:
    data = demo_config(None)
    data["redis_cache"] = {"url": own_redis.url, "prefix": "test/", "retry_interval": 0.5}
    server = tileserver(data)
    row, col = tile_of(*CHANGED.centroid.coords[0], 18)
    path = f"/wmts/{PREFIX}/18/{row}/{col}.png"
    before = metrics(server)
    assert server.get(path).headers["x-tile-source"] == "render"
    hit = server.get(path)
    assert (hit.status, hit.headers["x-tile-source"]) == (200, "redis")
    assert key(18, row, col) in redis_keys(own_redis)
    after = metrics(server)
    assert (
        value(after, "tileserver_tiles_total", layer="osm", source="redis")
        - value(before, "tileserver_tiles_total", layer="osm", source="redis")
        == 1
    )

    own_redis.kill()
    other = server.get(f"/wmts/{PREFIX}/18/{row}/{col + 8}.png")  # a miss, rendered without it
    assert other.status == 200
    with Image.open(io.BytesIO(other.body)) as image:
        assert image.size == (256, 256)

    def redis_errors() -> float:
        return value(metrics(server), "tileserver_dependency_errors_total",
                     dependency="redis", kind="unavailable")  # fmt: skip

    wait_until(lambda: redis_errors() >= 1, "a Redis error counted in /metrics")
    ready = json.loads(server.get("/ready").body)
    address = own_redis.url.removeprefix("redis://")
    assert ready["tile_cache"]["redis"][address].startswith("down for ")
    assert ready["degraded"][f"tile cache redis {address}"].startswith("unavailable for ")
