"""A layer on several grids (TileCloud-chain's `grids: [a, b]`), end to end: one
TileMatrixSetLink per grid in the Capabilities, a tile of each grid served (rendered in that
grid's CRS), and /admin/expire on every grid (issue 13)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from lxml import etree
from PIL import Image

from tests.e2e.test_admin import ENV, call
from tests.support.schemas import validate_capabilities
from tests.support.server import TileServer, demo_config, fetch

pytestmark = pytest.mark.e2e

NS = {"wmts": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
OSM_BBOX = [824000, 5421800, 829500, 5428000]  # EPSG:3857, the demo's `osm`
# The same tile on each grid as the demo's single-grid layers serve it.
TILES = {"epsg3857": ("osm", "17", 47790, 68240), "epsg2056": ("osm_lv95", "25", 1980, 699)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TileServer]:
    config: dict[str, Any] = demo_config(None)
    config["layers"]["both"] = {
        "title": "Monaco on both grids",
        "grids": ["epsg3857", "epsg2056"],
        "bbox": OSM_BBOX,  # in the first grid's CRS, reprojected to the second's
    }
    config["server"] = {"admin": {"enabled": True}}
    server = TileServer(config, tmp_path_factory.mktemp("multi-grid"), env=ENV)
    server.start()
    yield server
    server.stop()


def tile(server: TileServer, layer: str, grid: str, matrix: str, row: int, col: int) -> Any:
    return server.get(f"/wmts/1.0.0/{layer}/default/{grid}/{matrix}/{row}/{col}.png")


def pixels(body: bytes) -> bytes:
    image = Image.open(io.BytesIO(body))
    assert image.format == "PNG" and image.size == (256, 256)
    return image.convert("RGBA").tobytes()


def test_capabilities_link_every_grid_of_the_layer(server: TileServer) -> None:
    body = server.get("/wmts/1.0.0/WMTSCapabilities.xml").body
    validate_capabilities(body)
    doc = etree.fromstring(body)
    layer = next(
        layer
        for layer in doc.iterfind("wmts:Contents/wmts:Layer", NS)
        if layer.findtext("ows:Identifier", namespaces=NS) == "both"
    )
    links = {
        link.findtext("wmts:TileMatrixSet", namespaces=NS): link
        for link in layer.iterfind("wmts:TileMatrixSetLink", NS)
    }
    assert list(links) == ["epsg3857", "epsg2056"]
    for grid, (_, matrix, row, col) in TILES.items():
        limits = next(
            lim
            for lim in links[grid].iterfind(".//wmts:TileMatrixLimits", NS)
            if lim.findtext("wmts:TileMatrix", namespaces=NS) == matrix
        )
        low_row, high_row, low_col, high_col = (
            int(limits.findtext(f"wmts:{t}", namespaces=NS) or "-1")
            for t in ("MinTileRow", "MaxTileRow", "MinTileCol", "MaxTileCol")
        )
        assert low_row <= row <= high_row and low_col <= col <= high_col
    crs = [box.get("crs") for box in layer.iterfind("ows:BoundingBox", NS)]
    assert crs == ["urn:ogc:def:crs:EPSG::3857", "urn:ogc:def:crs:EPSG::2056"]
    lv95 = layer.findall("ows:BoundingBox", NS)[1]
    minx, miny = (float(v) for v in (lv95.findtext("ows:LowerCorner", namespaces=NS) or "").split())
    assert 2594000 < minx < 2598000 and 838000 < miny < 842000  # Monaco in LV95


def test_owslib_reads_both_links(server: TileServer) -> None:
    from owslib.wmts import WebMapTileService

    wmts = WebMapTileService(server.base + "/wmts/1.0.0/WMTSCapabilities.xml")
    assert list(wmts.contents["both"].tilematrixsetlinks) == ["epsg3857", "epsg2056"]


@pytest.mark.parametrize("grid", list(TILES))
def test_a_tile_of_each_grid_is_rendered_in_that_grids_crs(server: TileServer, grid: str) -> None:
    """The layer on its second grid draws what a layer of that grid alone draws."""
    single, matrix, row, col = TILES[grid]
    both = tile(server, "both", grid, matrix, row, col)
    assert both.status == 200 and both.headers["content-type"] == "image/png"
    alone = tile(server, single, grid, matrix, row, col)
    assert pixels(both.body) == pixels(alone.body)
    image = Image.open(io.BytesIO(both.body)).convert("RGB")
    assert len(image.getcolors(65536) or []) > 20  # a map, not a blank tile
    params = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": "both",
              "STYLE": "default", "FORMAT": "image/png", "TILEMATRIXSET": grid,
              "TILEMATRIX": matrix, "TILEROW": str(row), "TILECOL": str(col)}  # fmt: skip
    kvp = fetch(f"{server.base}/wmts?{urlencode(params)}")
    assert kvp.status == 200 and kvp.body == both.body


def test_an_unknown_matrix_set_names_the_layers_grids(server: TileServer) -> None:
    answer = tile(server, "both", "epsg4326", "17", 1, 1)
    assert answer.status == 400
    assert b"use one of ['epsg3857', 'epsg2056']" in answer.body
    # Limits apply per grid: the LV95 level 25 row of Monaco is out of range in EPSG:3857.
    assert tile(server, "both", "epsg3857", "25", 1980, 699).status == 400


def test_expire_reaches_every_grid(server: TileServer) -> None:
    for grid, (_, matrix, row, col) in TILES.items():
        tile(server, "both", grid, matrix, row, col)
        assert tile(server, "both", grid, matrix, row, col).headers["x-tile-source"] == "memory"
    # Without `zooms`, each grid's own on-demand levels (here all of them).
    answer = call(server, "expire", {"layer": "both"})
    assert answer.status == 200, answer.body
    report = json.loads(answer.body)
    assert set(report["grids"]) == {"epsg3857", "epsg2056"}
    assert report["grids"]["epsg3857"]["zooms"] == list(range(21))
    assert report["grids"]["epsg2056"]["zooms"] == list(range(28))
    assert report["tiles"] == sum(g["tiles"] for g in report["grids"].values()) > 0
    for grid, (_, matrix, row, col) in TILES.items():
        assert tile(server, "both", grid, matrix, row, col).headers["x-tile-source"] == "render"
    # One grid only: the area is then in that grid's CRS.
    one = call(server, "expire", {"layer": "both", "grid": "epsg2056", "zooms": "25",
                                  "bbox": [2596500, 840000, 2601500, 845500]})  # fmt: skip
    assert one.status == 200, one.body
    assert json.loads(one.body)["zooms"] == [25]
    assert tile(server, "both", "epsg2056", "25", 1980, 699).headers["x-tile-source"] == "render"
    assert tile(server, "both", "epsg3857", "17", 47790, 68240).headers["x-tile-source"] == "memory"
    wrong = call(server, "expire", {"layer": "both", "grid": "nope"})
    assert wrong.status == 400 and b"its grids: epsg3857, epsg2056" in wrong.body
    # Levels are each grid's: level 25 exists on LV95 only, so it needs `grid`.
    deep = call(server, "expire", {"layer": "both", "zooms": "25"})
    assert deep.status == 400 and b"(grid 'epsg3857')" in deep.body
