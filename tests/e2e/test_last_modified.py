"""Last-Modified and If-Modified-Since on every tile endpoint (issue 17): a rendered tile
dated by its render, a stored one by its store (a folder, MBTiles), the same date and the
same 304 through WMTS REST and KVP, OGC API - Tiles, TMS, gmaps and XYZ (the real
application, served in the test process, with a real Memcached)."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from PIL import Image

from tests.support.app_server import AppServer
from tests.support.daemons import Memcached
from tests.support.images import plant, planted_png
from tests.support.server import Response, demo_config
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.adapters.mbtiles_store import MBTilesStore
from tileserver.config import parse_config
from tileserver.store_layout import tile_path

# z17 over Monte-Carlo (rendered on demand by the demo layer; pre-generated below SEED).
Z, ROW, COL = 17, 47790, 68240
SEED = 1.19  # min_resolution_seed: z17 (1.194 m) comes from the store
STORED_AT = 1_600_000_000  # Sun, 13 Sep 2020 12:26:40 GMT: the planted tiles' time


def endpoints(row: int = ROW, col: int = COL) -> dict[str, str]:
    """The same tile of layer osm through every tile endpoint."""
    y = 2**Z - 1 - row  # TMS counts rows from the bottom
    kvp = urlencode({
        "SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": "osm",
        "STYLE": "default", "FORMAT": "image/png", "TILEMATRIXSET": "epsg3857",
        "TILEMATRIX": str(Z), "TILEROW": str(row), "TILECOL": str(col),
    })  # fmt: skip
    return {
        "wmts-rest": f"/wmts/1.0.0/osm/default/epsg3857/{Z}/{row}/{col}.png",
        "wmts-kvp": f"/wmts?{kvp}",
        "ogcapi": f"/ogcapi/collections/osm/map/tiles/WebMercatorQuad/{Z}/{row}/{col}",
        "tms": f"/tms/1.0.0/osm@epsg3857/{Z}/{col}/{y}.png",
        "gmaps": f"/gmaps/osm@epsg3857/{Z}/{col}/{row}.png",
        "xyz": f"/xyz/osm/epsg3857/{Z}/{col}/{row}.png",
    }


def http_time(response: Response) -> float:
    return header_time(response, "last-modified")


def header_time(response: Response, name: str) -> float:
    return parsedate_to_datetime(response.headers[name]).timestamp()


def max_age(response: Response) -> int:
    found = re.search(r"max-age=(\d+)", response.headers["cache-control"])
    assert found is not None, response.headers["cache-control"]
    return int(found.group(1))


def image_of(response: Response) -> Image.Image:
    assert response.status == 200, response.body[:300]
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.body))
    image.load()
    assert image.size == (256, 256)
    return image


def assert_revalidates_everywhere(server: AppServer, reference: Response) -> None:
    """Every endpoint gives the tile the reference's Last-Modified and ETag; an
    If-Modified-Since of that date is a 304 with the caching headers and no body, one a
    second earlier the whole tile."""
    modified = reference.headers["last-modified"]
    earlier = formatdate(http_time(reference) - 1, usegmt=True)
    for name, path in endpoints().items():
        full = server.get(path)
        assert image_of(full).tobytes() == image_of(reference).tobytes(), name
        assert full.headers["last-modified"] == modified, name
        assert full.headers["etag"] == reference.headers["etag"], name

        same = server.get(path, {"If-Modified-Since": modified})
        assert (same.status, same.body) == (304, b""), name
        for header in ("etag", "last-modified", "cache-control"):
            assert same.headers[header] == full.headers[header], (name, header)
        # Expires is the answer's own time plus max-age, so it follows its Date (aiohttp's,
        # refreshed each second on its own: the two may be a second apart).
        for answer in (full, same):
            lag = header_time(answer, "expires") - header_time(answer, "date") - max_age(answer)
            assert lag in (-1, 0, 1), (name, lag)
        assert same.headers["access-control-allow-origin"] == "*", name
        if name == "ogcapi":  # its format is negotiated
            assert same.headers["vary"] == full.headers["vary"] == "Accept"

        older = server.get(path, {"If-Modified-Since": earlier})
        assert older.status == 200, name
        assert older.body == full.body and older.headers["last-modified"] == modified, name

        # If-None-Match decides when both are sent (RFC 9110, 13.1.3).
        other = server.get(path, {"If-None-Match": '"other"', "If-Modified-Since": modified})
        assert other.status == 200 and other.body == full.body, name


def test_a_rendered_tile_is_dated_by_its_render_and_revalidates_on_every_endpoint(
    memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(demo_config(memcached.address))
    before = time.time()
    first = server.get(endpoints()["wmts-rest"])
    after = time.time()
    assert first.headers["x-tile-source"] == "render"
    image_of(first)
    # Whole seconds: the render's second, between the request and its answer.
    assert int(before) <= http_time(first) <= after
    assert_revalidates_everywhere(server, first)
    assert server.renders() == 1

    # A neighbour of the same metatile, from Memcached: the same render, the same date.
    neighbour = server.get(endpoints(ROW, COL + 1)["wmts-rest"])
    assert neighbour.headers["x-tile-source"] in ("memcached", "hot")
    assert neighbour.headers["last-modified"] == first.headers["last-modified"]
    image_of(neighbour)

    # A date in the future, or not a date, is ignored: the whole tile.
    future = formatdate(time.time() + 3600, usegmt=True)
    for value in (future, "yesterday", "Sat, 31 Dec 9999 23:59:59 GMT"):
        response = server.get(endpoints()["xyz"], {"If-Modified-Since": value})
        assert response.status == 200 and response.body == first.body, value


def stored_config(memcached: Memcached, cache: dict[str, Any], **osm: Any) -> dict[str, Any]:
    config = demo_config(memcached.address, osm={"cache": "tiles", "min_resolution_seed": SEED,
                                                 **osm})  # fmt: skip
    config["caches"] = {"tiles": cache}
    return config


def path17(row: int = ROW, col: int = COL) -> str:
    return tile_path("", "osm", "default", (), "epsg3857", str(Z), row, col, "png")


def test_a_tile_from_a_folder_is_dated_by_its_file(
    memcached: Memcached, app_server: Callable[..., AppServer], tmp_path: Path
) -> None:
    folder = tmp_path / "tiles"
    red = planted_png((255, 0, 0))
    plant(FilesystemStore(folder), {path17(): red})
    os.utime(folder / path17(), (STORED_AT, STORED_AT))
    cache = {"type": "filesystem", "folder": str(folder)}
    server = app_server(stored_config(memcached, cache, missing_tile="no_content"))

    first = server.get(endpoints()["wmts-rest"])
    assert first.headers["x-tile-source"] == "store"
    assert image_of(first).convert("RGB").getcolors() == [(256 * 256, (255, 0, 0))]
    assert first.headers["last-modified"] == "Sun, 13 Sep 2020 12:26:40 GMT"
    assert_revalidates_everywhere(server, first)
    assert server.renders() == 0

    # Rewritten: the new file's time, and the old date is no longer a 304.
    blue = planted_png((0, 0, 255))
    plant(FilesystemStore(folder), {path17(): blue})
    os.utime(folder / path17(), (STORED_AT + 60, STORED_AT + 60))
    for path in endpoints().values():
        again = server.get(path, {"If-Modified-Since": first.headers["last-modified"]})
        assert image_of(again).convert("RGB").getcolors() == [(256 * 256, (0, 0, 255))]
        assert again.headers["last-modified"] == "Sun, 13 Sep 2020 12:27:40 GMT"

    # A tile missing from the store (204) has no date.
    missing = server.get(endpoints(ROW, COL + 1)["wmts-rest"])
    assert missing.status == 204 and missing.body == b""
    assert "last-modified" not in missing.headers


def test_a_tile_from_mbtiles_is_dated_by_its_file(
    memcached: Memcached, app_server: Callable[..., AppServer], tmp_path: Path
) -> None:
    folder = tmp_path / "mb"
    cache = {"type": "mbtiles", "folder": str(folder)}
    config = stored_config(memcached, cache)
    grids = parse_config(config, tmp_path).grids
    green = planted_png((0, 128, 0))
    plant(MBTilesStore(folder, grids=grids), {path17(): green})
    (database,) = folder.rglob("*.mbtiles")
    assert not database.with_name(database.name + "-wal").exists()  # checkpointed at close
    os.utime(database, (STORED_AT, STORED_AT))
    server = app_server(config)

    first = server.get(endpoints()["wmts-rest"])
    assert first.headers["x-tile-source"] == "store"
    assert image_of(first).convert("RGB").getcolors() == [(256 * 256, (0, 128, 0))]
    # The file's time (the reader's empty -wal file is no write).
    assert first.headers["last-modified"] == "Sun, 13 Sep 2020 12:26:40 GMT"
    assert_revalidates_everywhere(server, first)
    assert server.renders() == 0
