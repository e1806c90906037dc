"""End to end: `type: wms` layers over a real MapServer WMS (tests/support/mapserver.py)
over a real PostGIS with the Monaco data: one GetMap per metatile, tiles that match a
direct GetMap, GetFeatureInfo forwarded, upstream failures answered 502/503/504 with
nothing stored, and generation from the WMS."""

from __future__ import annotations

import asyncio
import io
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from lxml import etree
from PIL import Image, ImageChops

from tests.e2e.test_on_demand import assert_map_tile
from tests.support.app_server import AppServer
from tests.support.configs import MERC, mercator_grid
from tests.support.daemons import Memcached
from tests.support.mapserver import MapServerWMS
from tests.support.outcome import call_failed
from tests.support.schemas import validate_capabilities, validate_exception_report
from tests.support.server import TileServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

WGS84_GRID = {
    "srs": "EPSG:4326",
    "bbox": [-180, -90, 180, 90],
    "resolutions": [0.703125 / 2**z for z in range(20)],
}
SLOW = 6  # seconds the WMS's slow mode waits before answering
# The Grimaldi Forum (a building of the Monaco data), in EPSG:3857.
FORUM = (827310.0, 5425907.0)
Z = 17


@pytest.fixture
def wms(mapserver: MapServerWMS, request: pytest.FixtureRequest) -> Iterator[MapServerWMS]:
    """The session's Monaco WMS (tests/conftest.py): every test here sets its fault modes
    back and starts it again after stopping it, on the same port. After a failure, what
    the WMS was asked and how long each answer took are printed with the report."""
    yield mapserver
    if call_failed(request):
        print("The WMS's requests since the test's last clear_log (Unix time when answered,")
        print("kind, method, status, bytes, milliseconds, mode, query):")
        print(mapserver.access_log.read_text(errors="replace")[-6000:])
        print("Its error log (mapserv's messages), last lines:")
        print(mapserver.errors()[-3000:])


def wms_config(wms: MapServerWMS, memcached: Memcached | None, **layer: Any) -> dict[str, Any]:
    source = {"type": "wms", "url": wms.url, "layers": "osm", "meta_size": 8, "meta_buffer": 32}
    config: dict[str, Any] = {
        "grids": {"epsg3857": mercator_grid(), "wgs84": WGS84_GRID},
        "upstream": {"retry_backoff": 0.05},
        "layers": {
            "wms": {
                **source,
                "grid": "epsg3857",
                "query_layers": "buildings,roads",
                "info_formats": ["text/plain", "application/vnd.ogc.gml"],
                **layer,
            },
            "wms13": {**source, "grid": "wgs84", "version": "1.3.0"},
        },
    }
    if memcached is not None:
        config["memcached"] = {
            "servers": [memcached.address],
            "prefix": "t/",
            "retry_interval": 0.5,
        }
    return config


def tile_of(x: float, y: float, z: int = Z) -> tuple[int, int, float, float]:
    """(row, col, i, j) of the Web Mercator tile holding point (x, y), and its pixel."""
    span = 2 * MERC / 2**z
    col_f = (x + MERC) / span
    row_f = (MERC - y) / span
    col, row = math.floor(col_f), math.floor(row_f)
    return row, col, (col_f - col) * 256, (row_f - row) * 256


def tile_bbox(row: int, col: int, z: int = Z) -> tuple[float, float, float, float]:
    span = 2 * MERC / 2**z
    minx = -MERC + col * span
    maxy = MERC - row * span
    return (minx, maxy - span, minx + span, maxy)


def path(layer: str, grid: str, z: int, row: int, col: int) -> str:
    return f"/wmts/1.0.0/{layer}/default/{grid}/{z}/{row}/{col}.png"


def rgba(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGBA")


def differing_pixels(a: Image.Image, b: Image.Image, tolerance: int = 2) -> int:
    """Pixels whose channels differ by more than `tolerance`."""
    diff = ImageChops.difference(a, b).convert("L")
    return sum(count for value, count in enumerate(diff.histogram()) if value > tolerance)


async def _concurrent(base: str, paths: list[str]) -> list[tuple[int, str]]:
    async with aiohttp.ClientSession() as session:

        async def one(p: str) -> tuple[int, str]:
            async with session.get(base + p) as r:
                await r.read()
                return r.status, r.headers.get("X-Tile-Source", "")

        return await asyncio.gather(*(one(p) for p in paths))


def test_one_getmap_per_metatile_and_tiles_match_a_direct_getmap(
    wms: MapServerWMS, memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    server = tileserver(wms_config(wms, memcached), workers=2)
    row, col, _, _ = tile_of(*FORUM)
    top, left = row - row % 8, col - col % 8
    block = [(top + r, left + c) for r in range(8) for c in range(8)]
    wms.clear_log()

    # 64 concurrent requests for every tile of one metatile, over two server processes.
    answers = asyncio.run(_concurrent(server.base, [path("wms", "epsg3857", Z, r, c)
                                                    for r, c in block]))  # fmt: skip
    assert all(status == 200 for status, _ in answers)
    assert wms.getmap_count() == 1
    sources = [source for _, source in answers]
    assert sources.count("render") == 1, sources
    getmap = next(r for r in wms.requests() if r.request.lower() == "getmap")
    params = getmap.params
    assert (params["WIDTH"], params["HEIGHT"]) == ("2112", "2112")  # 8 x 256 + 2 x 32
    assert params["SRS"] == "EPSG:3857" and params["LAYERS"] == "osm"

    # Later requests are cache hits: still one GetMap. The worker that rendered may answer
    # from its hot tier (on by default, 2 s), the other from Memcached.
    again = server.get(path("wms", "epsg3857", Z, row, col))
    assert again.headers["x-tile-source"] in ("hot", "memcached")
    assert wms.getmap_count() == 1

    # The tile is the same area as a direct GetMap of the metatile's extent, pixel for
    # pixel (PNG is lossless; cutting adds nothing)...
    buffer = 32 * (2 * MERC / 2**Z) / 256
    first, last = tile_bbox(top, left), tile_bbox(top + 7, left + 7)
    extent = (first[0] - buffer, last[1] - buffer, last[2] + buffer, first[3] + buffer)
    reference = rgba(wms.direct_getmap(extent, 2112, 2112))
    x, y = 32 + (col - left) * 256, 32 + (row - top) * 256
    expected = reference.crop((x, y, x + 256, y + 256))
    tile = rgba(again.body)
    assert_map_tile(again.body)
    assert differing_pixels(tile, expected) == 0
    # ...and, but for labels placed differently on a smaller map, like a GetMap of
    # the tile alone.
    alone = rgba(wms.direct_getmap(tile_bbox(row, col), 256, 256))
    assert differing_pixels(tile, alone, tolerance=8) < 0.1 * 256 * 256
    # A neighbouring metatile costs one more GetMap.
    assert server.get(path("wms", "epsg3857", Z, top + 8, left)).status == 200
    assert wms.getmap_count() == 2


def test_wms_1_3_0_on_a_latitude_first_crs(
    wms: MapServerWMS, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(wms_config(wms, None))
    lon, lat = 7.4305, 43.7465
    z = 16
    span = 360 / (2 * 2**z)  # the grid is 2 x 1 tiles at level 0
    col, row = math.floor((lon + 180) / span), math.floor((90 - lat) / span)
    wms.clear_log()
    answer = server.get(path("wms13", "wgs84", z, row, col))
    assert answer.status == 200, answer.body[:500]
    assert_map_tile(answer.body)
    params = next(r for r in wms.requests() if r.request.lower() == "getmap").params
    assert params["VERSION"] == "1.3.0" and params["CRS"] == "EPSG:4326"
    south, west, north, east = (float(v) for v in params["BBOX"].split(","))
    assert south < north and west < east and 43 < south < 44 and 7 < west < 8  # lat first
    # The same pixels as a WMS 1.1.1 GetMap (lon/lat order) of the same extent.
    reference = rgba(wms.direct_getmap((west, south, east, north), 2112, 2112, "EPSG:4326"))
    top, left = row - row % 8, col - col % 8
    x, y = 32 + (col - left) * 256, 32 + (row - top) * 256
    assert differing_pixels(rgba(answer.body), reference.crop((x, y, x + 256, y + 256))) == 0


def test_getfeatureinfo_returns_the_wms_answer_for_the_pixel(
    wms: MapServerWMS, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(wms_config(wms, None))
    row, col, i_f, j_f = tile_of(*FORUM)
    i, j = int(i_f), int(j_f)
    bbox = tile_bbox(row, col)
    direct = wms.get(
        {**wms.getmap_params(bbox, 256, 256), "REQUEST": "GetFeatureInfo",
         "QUERY_LAYERS": "buildings,roads", "INFO_FORMAT": "text/plain", "X": str(i),
         "Y": str(j)},
        {"X-Runner-Direct": "1"},
    )  # fmt: skip
    assert direct.status == 200 and b"Grimaldi Forum" in direct.body

    kvp = server.get(
        f"/wmts?SERVICE=WMTS&REQUEST=GetFeatureInfo&VERSION=1.0.0&LAYER=wms&STYLE=default"
        f"&FORMAT=image/png&TILEMATRIXSET=epsg3857&TILEMATRIX={Z}&TILEROW={row}"
        f"&TILECOL={col}&I={i}&J={j}&INFOFORMAT=text/plain"
    )
    assert kvp.status == 200, kvp.body[:500]
    assert kvp.headers["content-type"].startswith("text/plain")
    assert kvp.body == direct.body
    rest = server.get(f"/wmts/1.0.0/wms/default/epsg3857/{Z}/{row}/{col}/{j}/{i}.txt")
    assert rest.status == 200 and rest.body == direct.body
    gml = server.get(f"/wmts/1.0.0/wms/default/epsg3857/{Z}/{row}/{col}/{j}/{i}.gml")
    assert gml.status == 200 and b"Grimaldi Forum" in gml.body
    etree.fromstring(gml.body)  # well-formed GML

    # Elsewhere in the tile, the sea: the WMS finds nothing, and so does tileserver.
    for bad, code, status in [
        (f"{Z}/{row}/{col}/{j}/256.txt", b"PointIJOutOfRange", 400),
        (f"{Z}/{row}/{col}/x/1.txt", b"InvalidParameterValue", 400),
        (f"{Z}/{row}/{col}/1/1.html", b"InvalidParameterValue", 400),
    ]:
        answer = server.get(f"/wmts/1.0.0/wms/default/epsg3857/{bad}")
        assert answer.status == status and code in answer.body
        validate_exception_report(answer.body)
    not_queryable = server.get("/wmts/1.0.0/wms13/default/wgs84/3/1/1/1/1.txt")
    assert not_queryable.status == 501 and b"OperationNotSupported" in not_queryable.body

    capabilities = server.get("/wmts/1.0.0/WMTSCapabilities.xml").body
    validate_capabilities(capabilities)
    doc = etree.fromstring(capabilities)
    ns = {"w": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
    layer = doc.xpath("//w:Layer[ows:Identifier='wms']", namespaces=ns)[0]
    assert layer.xpath("w:InfoFormat/text()", namespaces=ns) == [
        "text/plain", "application/vnd.ogc.gml"]  # fmt: skip
    templates = layer.xpath("w:ResourceURL[@resourceType='FeatureInfo']/@template", namespaces=ns)
    assert templates == [
        f"{server.base}/wmts/1.0.0/wms/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/"
        f"{{TileCol}}/{{J}}/{{I}}.{ext}"
        for ext in ("txt", "gml")
    ]
    other = doc.xpath("//w:Layer[ows:Identifier='wms13']", namespaces=ns)[0]
    assert other.xpath("w:InfoFormat", namespaces=ns) == []
    operations = doc.xpath("//ows:Operation/@name", namespaces=ns)
    assert operations == ["GetCapabilities", "GetTile", "GetFeatureInfo"]


@pytest.mark.parametrize(
    ("mode", "status", "message"),
    [
        ("service_exception", 502, b"ServiceException"),
        ("html_error", 502, b"HTTP 500"),
        ("truncated", 502, b"broken answer"),
        ("half_png", 502, b"not a readable image"),
        (f"slow:{SLOW}", 504, b"no answer within 2 s"),
    ],
)
def test_upstream_failures_answer_502_504_and_store_nothing(
    wms: MapServerWMS,
    memcached: Memcached,
    app_server: Callable[..., AppServer],
    mode: str,
    status: int,
    message: bytes,
) -> None:
    # Tiles alone (no metatile): a GetMap of 320 px. The slow mode answers after SLOW s,
    # past a 2 s timeout; the other modes answer at once, so their layer's timeout only
    # bounds a hang (and the healed render after them is not raced against 2 s on a
    # machine busy with other work).
    timeout = 2 if mode.startswith("slow") else 60
    server = app_server(wms_config(wms, memcached, timeout=timeout, retries=1, meta_size=1))
    row, col, _, _ = tile_of(*FORUM)
    row += 16 * ["service_exception", "html_error", "truncated", "half_png", "slow"].index(
        mode.split(":")[0]
    )
    wms.set_mode(mode)
    wms.clear_log()
    started = time.monotonic()
    try:
        answer = server.get(path("wms", "epsg3857", Z, row, col))
    finally:
        wms.set_mode("normal")
    elapsed = time.monotonic() - started
    assert answer.status == status, answer.body[:500]
    assert message in answer.body, answer.body[:500]
    # What went wrong, not where: no address, and not the upstream's own words.
    assert str(wms.port).encode() not in answer.body and b"127.0.0.1" not in answer.body
    assert answer.headers["content-type"].startswith("application/xml")
    validate_exception_report(answer.body)
    if timeout == 2:  # 2 attempts of at most 2 s and a short backoff, not the WMS's wait
        assert elapsed < SLOW
    # One retry. A slow answer is logged by the WMS when it is finally sent.
    wait_until(lambda: wms.getmap_count() >= 2, "the WMS's two answers")
    assert wms.getmap_count() == 2
    # Nothing was stored: the next request renders, now that the WMS is well again.
    assert memcached.get(f"t/wms/default/epsg3857/{Z}/{row}/{col}") is None
    healed = server.get(path("wms", "epsg3857", Z, row, col))
    assert healed.status == 200 and healed.headers["x-tile-source"] == "render"
    assert rgba(healed.body).size == (256, 256)  # some of these tiles are all sea
    metrics = server.get("/metrics").body.decode()
    assert f'tileserver_dependency_errors_total{{dependency="upstream",kind="{status}"}} 1.0' in (
        metrics
    )


def test_an_answer_cut_off_above_the_tile_answers_502_and_stores_nothing(
    wms: MapServerWMS, memcached: Memcached, app_server: Callable[..., AppServer]
) -> None:
    """A metatile's answer cut off (`truncated`: half the body, then the connection
    closed) above the tile asked for, in the metatile's bottom row: 502 after the retry,
    nothing of the metatile stored. (A tile in the top rows may be answered from the
    first half as it is read: answer first; tests/adapters/test_image_feed.py.)"""
    server = app_server(wms_config(wms, memcached, retries=1))
    row, col, _, _ = tile_of(*FORUM)
    top, left = row - row % 8 + 64, col - col % 8  # a metatile of its own
    wms.set_mode("truncated")
    wms.clear_log()
    try:
        answer = server.get(path("wms", "epsg3857", Z, top + 7, left))
    finally:
        wms.set_mode("normal")
    assert answer.status == 502, answer.body[:500]
    assert b"broken answer" in answer.body
    wait_until(lambda: wms.getmap_count() >= 2, "the WMS's two answers")
    assert wms.getmap_count() == 2
    for r in range(top, top + 8):
        for c in range(left, left + 8):
            assert memcached.get(f"t/wms/default/epsg3857/{Z}/{r}/{c}") is None
    healed = server.get(path("wms", "epsg3857", Z, top + 7, left))
    assert healed.status == 200 and healed.headers["x-tile-source"] == "render"
    assert rgba(healed.body).size == (256, 256)


def test_wms_stopped_then_restarted(
    wms: MapServerWMS, app_server: Callable[..., AppServer]
) -> None:
    server = app_server(wms_config(wms, None, retries=0))
    row, col, _, _ = tile_of(*FORUM)
    wms.stop(keep_files=True)
    try:
        down = server.get(path("wms", "epsg3857", Z, row + 200, col))
        assert down.status == 503, down.body[:300]
        assert b"The WMS of layer 'wms' cannot be reached" in down.body
        assert str(wms.port).encode() not in down.body  # where it is: the log says
        ready = server.get("/ready")
        assert ready.status == 200 and b"upstream" in ready.body  # degraded, still ready
    finally:
        wms.start()
    back = server.get(path("wms", "epsg3857", Z, row + 200, col))
    assert back.status == 200 and back.headers["x-tile-source"] == "render"


def test_generate_tiles_from_the_wms(wms: MapServerWMS, tmp_path: Path) -> None:
    config = wms_config(wms, None)
    config["caches"] = {"local": {"type": "filesystem", "folder": str(tmp_path / "tiles")}}
    config["layers"]["wms"]["cache"] = "local"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    minx, miny = FORUM[0] - 300, FORUM[1] - 300
    wms.clear_log()
    metrics_file = tmp_path / "generate.prom"
    run = subprocess.run(
        [sys.executable, "-m", "tileserver", "generate", "--config", str(config_path),
         "--layer", "wms", "--zoom", "16-17", "--bbox", f"{minx},{miny},{minx + 600},{miny + 600}",
         "--processes", "1", "-q", "--metrics-file", str(metrics_file)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    written = sorted((tmp_path / "tiles").rglob("*.png"))
    per_level = {z: [p for p in written if f"/epsg3857/{z}/" in str(p)] for z in (16, 17)}
    assert all(per_level.values()), written
    # One GetMap per metatile: the tiles asked for fall in one or two metatiles a level.
    metatiles = {
        (z, int(p.parent.name) // 8, int(p.stem) // 8) for z, ps in per_level.items() for p in ps
    }  # .../{z}/{row}/{col}.png
    assert wms.getmap_count() == len(metatiles)
    for p in written:
        assert_map_tile(p.read_bytes())
    prom = metrics_file.read_text()
    assert f'tileserver_tiles_generated{{layer="wms"}} {float(len(written))}' in prom


def test_an_answer_still_coming_frees_its_render_process_for_other_metatiles(
    wms: MapServerWMS, memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    """A WMS that keeps its answer coming (`held`: half of it, then the rest when the test
    says) must not hold the one render process: the answer is taken back from it
    (FEED_FOR) and another metatile's tiles are answered meanwhile; once the rest comes,
    the held answer is cut whole, pixel for pixel."""
    server = tileserver(wms_config(wms, memcached, retries=0), workers=1, render_processes=1)
    row, col, _, _ = tile_of(*FORUM)
    top, left = row - row % 8 + 128, col - col % 8  # a metatile of its own
    # in its bottom row of tiles: its rows are in the half held back (one in the top rows
    # would be answered from the first half: answer first)
    held_path = path("wms", "epsg3857", Z, top + 7, left)
    other_path = path("wms", "epsg3857", Z, row, col)  # the Forum's: a map, not blank
    wms.clear_log()
    wms.set_mode("held", count=1)
    held: list[Any] = []
    fetch = threading.Thread(target=lambda: held.append(server.get(held_path)), daemon=True)
    fetch.start()
    try:
        wait_until(lambda: any(r.mode == "held" for r in wms.requests()), "the held GetMap")
        other = server.get(other_path)
        assert not held, "the held answer came before it was released"
    finally:
        wms.release()
        fetch.join(60)
    assert other.status == 200 and other.headers["x-tile-source"] == "render"
    assert_map_tile(other.body)
    [answer] = held
    assert answer.status == 200 and answer.headers["x-tile-source"] == "render", answer.body[:300]
    buffer = 32 * (2 * MERC / 2**Z) / 256
    first, last = tile_bbox(top, left), tile_bbox(top + 7, left + 7)
    extent = (first[0] - buffer, last[1] - buffer, last[2] + buffer, first[3] + buffer)
    reference = rgba(wms.direct_getmap(extent, 2112, 2112))
    bottom = 32 + 7 * 256
    assert differing_pixels(rgba(answer.body), reference.crop((32, bottom, 288, bottom + 256))) == 0
    assert wms.getmap_count() == 2
