"""OGC API - Tiles, MapCache's TMS and gmaps, XYZ and TileJSON over HTTP, on a real server:
documents valid against the OGC's schemas, errors, tiles identical to WMTS REST's, and
real clients (GDAL's OGCAPI driver, morecantile)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import morecantile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from PIL import Image

from tests.support.chromium import page_value
from tests.support.daemons import Memcached, find_binary
from tests.support.ogc_json import (
    validate_collection,
    validate_openapi,
    validate_openapi_response,
    validate_tms,
)
from tests.support.server import Response, TileServer, demo_config

NS = {"wmts": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
REL = "http://www.opengis.net/def/rel/ogc/1.0/"
GRIDS = {"osm": "epsg3857", "osm_lv95": "epsg2056"}
TMS_IDS = {"osm": "WebMercatorQuad", "osm_lv95": "epsg2056"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TileServer]:
    daemon = Memcached()
    daemon.start()
    server = TileServer(demo_config(daemon.address), tmp_path_factory.mktemp("ogcapi"))
    server.start()
    yield server
    server.stop()
    daemon.stop()


def get_json(server: TileServer, path: str, **headers: str) -> Any:
    response = server.get(path, headers)
    assert response.status == 200, (path, response.status, response.body[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["access-control-allow-origin"] == "*"
    return json.loads(response.body)


def link(document: dict[str, Any], rel: str) -> str:
    href: str = next(item["href"] for item in document["links"] if item["rel"] == rel)
    return href


def relative(server: TileServer, href: str) -> str:
    assert href.startswith(server.base), href
    return href[len(server.base) :]


def limits_of(tileset: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {lim["tileMatrix"]: lim for lim in tileset["tileMatrixSetLimits"]}


def middle_tile(tileset: dict[str, Any], matrix: str) -> tuple[int, int]:
    lim = limits_of(tileset)[matrix]
    return (lim["minTileRow"] + lim["maxTileRow"]) // 2, (
        lim["minTileCol"] + lim["maxTileCol"]
    ) // 2


def wmts(server: TileServer, layer: str, matrix: str, row: int, col: int) -> Response:
    path = f"/wmts/1.0.0/{layer}/default/{GRIDS[layer]}/{matrix}/{row}/{col}.png"
    response = server.get(path)
    assert response.status == 200, (path, response.body[:300])
    return response


def decoded(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


# --- documents ---------------------------------------------------------------------------


def test_every_document_validates_against_the_ogc_schemas(server: TileServer) -> None:
    landing = get_json(server, "/ogcapi/")
    validate_openapi("landingPage", landing)
    assert get_json(server, "/ogcapi") == landing
    conformance = get_json(server, relative(server, link(landing, "conformance")))
    validate_openapi("confClasses", conformance)
    assert "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset" in conformance[
        "conformsTo"]  # fmt: skip
    sets = get_json(server, relative(server, link(landing, REL + "tiling-schemes")))
    validate_openapi_response("TileMatrixSetsList", sets)
    assert [s["id"] for s in sets["tileMatrixSets"]] == ["WebMercatorQuad", "epsg2056"]
    for item in sets["tileMatrixSets"]:
        validate_tms("tileMatrixSet.json", get_json(server, relative(server, link(item, "self"))))
    collections = get_json(server, relative(server, link(landing, "data")))
    validate_openapi("collections", {**collections, "collections": []})
    assert [c["id"] for c in collections["collections"]] == ["osm", "osm_lv95"]
    for listed in collections["collections"]:
        validate_collection(listed)
        collection = get_json(server, relative(server, link(listed, "self")))
        assert collection == listed
        tilesets = get_json(server, relative(server, link(collection, REL + "tilesets-map")))
        validate_openapi_response("TileSetsList", tilesets)
        for item in tilesets["tilesets"]:
            tileset = get_json(server, relative(server, link(item, "self")))
            validate_tms("tileSet.json", tileset)
            for scheme in (i for i in tileset["links"] if i["rel"] == REL + "tiling-scheme"):
                validate_tms(
                    "tileMatrixSet.json", get_json(server, relative(server, scheme["href"]))
                )


def test_tilesets_describe_the_layers_like_the_wmts_capabilities(server: TileServer) -> None:
    caps = etree.fromstring(server.get("/wmts/1.0.0/WMTSCapabilities.xml").body)
    for layer, tms_id in TMS_IDS.items():
        tileset = get_json(server, f"/ogcapi/collections/{layer}/map/tiles/{tms_id}")
        assert tileset["dataType"] == "map" and tileset["mediaTypes"] == ["image/png"]
        wmts_limits = {
            lim.findtext("wmts:TileMatrix", namespaces=NS): [
                int(lim.findtext(f"wmts:{t}", namespaces=NS))
                for t in ("MinTileRow", "MaxTileRow", "MinTileCol", "MaxTileCol")
            ]
            for lim in caps.iterfind(
                f".//wmts:Layer[ows:Identifier='{layer}']//wmts:TileMatrixLimits", NS
            )
        }
        ogc_limits = {
            m: [lim["minTileRow"], lim["maxTileRow"], lim["minTileCol"], lim["maxTileCol"]]
            for m, lim in limits_of(tileset).items()
        }
        shared = set(wmts_limits) & set(ogc_limits)
        assert len(shared) > 10
        assert {m: wmts_limits[m] for m in shared} == {m: ogc_limits[m] for m in shared}
        item = next(i for i in tileset["links"] if i["rel"] == "item")
        assert item["templated"] is True and item["type"] == "image/png"
        assert item["href"].endswith(f"/{tms_id}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}.png")
    merc = get_json(server, "/ogcapi/collections/osm/map/tiles/WebMercatorQuad")
    uri = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
    assert merc["tileMatrixSetURI"] == uri
    assert "tileMatrixSetURI" not in get_json(
        server, "/ogcapi/collections/osm_lv95/map/tiles/epsg2056"
    )


def test_morecantile_computes_the_tile_bounds_of_the_wmts_capabilities(server: TileServer) -> None:
    """morecantile, a TMS 2.0 reader written by others, against the WMTS TileMatrixSets."""
    caps = etree.fromstring(server.get("/wmts/1.0.0/WMTSCapabilities.xml").body)
    checked = 0
    for layer, tms_id in TMS_IDS.items():
        tms = morecantile.TileMatrixSet.model_validate(
            get_json(server, f"/ogcapi/tileMatrixSets/{tms_id}")
        )
        wmts_set = caps.find(
            f"wmts:Contents/wmts:TileMatrixSet[ows:Identifier='{GRIDS[layer]}']", NS
        )
        for matrix in wmts_set.iterfind("wmts:TileMatrix", NS):
            ident = matrix.findtext("ows:Identifier", namespaces=NS)
            scale = float(matrix.findtext("wmts:ScaleDenominator", namespaces=NS))
            left, top = (
                float(v) for v in matrix.findtext("wmts:TopLeftCorner", namespaces=NS).split()
            )
            size = int(matrix.findtext("wmts:TileWidth", namespaces=NS))
            width = int(matrix.findtext("wmts:MatrixWidth", namespaces=NS))
            height = int(matrix.findtext("wmts:MatrixHeight", namespaces=NS))
            span = scale * 0.00028 * size  # metres per tile: both CRSs are in metres
            z = int(ident)
            assert tms.matrix(z).matrixWidth == width and tms.matrix(z).matrixHeight == height
            for row, col in ((0, 0), (height - 1, width - 1), (height // 2, width // 3)):
                bounds = tms.xy_bounds(morecantile.Tile(col, row, z))
                expected = (left + col * span, top - (row + 1) * span,
                            left + (col + 1) * span, top - row * span)  # fmt: skip
                assert tuple(bounds) == pytest.approx(expected, rel=1e-9, abs=1e-6)
                checked += 1
    assert checked == 3 * (21 + 28)


# --- tiles -------------------------------------------------------------------------------


def test_ogcapi_tiles_are_the_wmts_tiles_with_the_same_headers(server: TileServer) -> None:
    for layer, tms_id in TMS_IDS.items():
        tileset = get_json(server, f"/ogcapi/collections/{layer}/map/tiles/{tms_id}")
        matrix = "17"
        row, col = middle_tile(tileset, matrix)
        reference = wmts(server, layer, matrix, row, col)
        base = f"/ogcapi/collections/{layer}/map/tiles/{tms_id}/{matrix}/{row}/{col}"
        browser = "image/avif,image/webp,image/*,*/*;q=0.8"
        for path, headers in (
            (base + ".png", {}),
            (base, {}),
            (base + "?f=png", {}),
            (base, {"Accept": "image/png"}),
            (base, {"Accept": browser}),
        ):
            response = server.get(path, headers)
            assert response.status == 200, (path, response.body[:300])
            assert response.body == reference.body
            assert response.headers["content-type"] == "image/png"
            assert response.headers["etag"] == reference.headers["etag"]
            assert response.headers["cache-control"] == reference.headers["cache-control"]
            assert "expires" in response.headers and "x-tile-source" in response.headers
            assert response.headers["access-control-allow-origin"] == "*"
            assert response.headers["vary"] == "Accept"
        assert decoded(reference.body).size == (256, 256)
        again = server.get(base, {"If-None-Match": reference.headers["etag"]})
        assert again.status == 304 and again.body == b""


def test_tms_gmaps_and_xyz_tiles_are_the_wmts_rest_tiles(server: TileServer) -> None:
    """TMS counts y from the bottom row of the matrix; gmaps and XYZ from the top."""
    flips = 0
    for layer, tms_id in TMS_IDS.items():
        grid = GRIDS[layer]
        tileset = get_json(server, f"/ogcapi/collections/{layer}/map/tiles/{tms_id}")
        definition = get_json(server, f"/ogcapi/tileMatrixSets/{tms_id}")
        heights = {m["id"]: m["matrixHeight"] for m in definition["tileMatrices"]}
        for matrix in ("14", "17", "19"):
            row, col = middle_tile(tileset, matrix)
            reference = wmts(server, layer, matrix, row, col)
            y = heights[matrix] - 1 - row
            assert y != row
            flips += 1
            paths = [f"/tms/1.0.0/{layer}@{grid}/{matrix}/{col}/{y}.png",
                     f"/gmaps/{layer}@{grid}/{matrix}/{col}/{row}.png"]  # fmt: skip
            if layer == "osm":
                paths += [f"/tms/1.0.0/{layer}/{matrix}/{col}/{y}.png",  # the layer's grid
                          f"/xyz/{layer}/{grid}/{matrix}/{col}/{row}.png"]  # fmt: skip
            for path in paths:
                response = server.get(path)
                assert response.status == 200, (path, response.body[:300])
                assert response.body == reference.body, path
                assert response.headers["etag"] == reference.headers["etag"]
                assert response.headers["access-control-allow-origin"] == "*"
                assert response.headers["x-tile-source"] in ("memcached", "hot", "memory")
    assert flips == 6


def test_tms_documents_follow_mapcache(server: TileServer) -> None:
    services = etree.fromstring(server.get("/tms/").body)
    href = services.find("TileMapService").get("href")
    assert href == f"{server.base}/tms/1.0.0/"
    service = etree.fromstring(server.get("/tms/1.0.0/").body)
    maps = {m.get("href").rsplit("/", 1)[1]: m for m in service.iterfind("TileMaps/TileMap")}
    assert set(maps) == {"osm@epsg3857", "osm_lv95@epsg2056"}
    assert maps["osm@epsg3857"].get("profile") == "global-mercator"
    assert maps["osm_lv95@epsg2056"].get("srs") == "EPSG:2056"
    tile_map = etree.fromstring(server.get("/tms/1.0.0/osm_lv95@epsg2056").body)
    assert tile_map.findtext("SRS") == "EPSG:2056"
    origin = tile_map.find("Origin")
    assert (origin.get("x"), origin.get("y")) == ("2420000", "830000")
    sets = tile_map.findall("TileSets/TileSet")
    assert len(sets) == 28 and sets[0].get("units-per-pixel") == "4000"
    assert sets[-1].get("href") == f"{server.base}/tms/1.0.0/osm_lv95@epsg2056/27"
    assert tile_map.find("TileFormat").get("extension") == "png"


def test_tilejson_only_for_the_web_mercator_quadtree(server: TileServer) -> None:
    document = get_json(server, "/xyz/osm/epsg3857/tilejson.json")
    assert document["tilejson"] == "3.0.0" and document["scheme"] == "xyz"
    assert document["tiles"] == [f"{server.base}/xyz/osm/epsg3857/{{z}}/{{x}}/{{y}}.png"]
    assert (document["minzoom"], document["maxzoom"]) == (0, 20)
    west, south, east, north = document["bounds"]
    assert 7.39 < west < east < 7.46 and 43.71 < south < north < 43.77
    for path in ("/xyz/osm_lv95/epsg2056/tilejson.json", "/xyz/osm_lv95/epsg2056/17/1/1.png"):
        response = server.get(path)
        assert response.status == 404
        problem = json.loads(response.body)
        validate_openapi("exception", problem)
        assert "not the Web Mercator quadtree" in problem["detail"]


# --- errors ------------------------------------------------------------------------------

ERRORS = [
    ("/ogcapi/collections/nope", {}, 404),
    ("/ogcapi/collections/nope/map/tiles", {}, 404),
    ("/ogcapi/collections/osm/map/tiles/epsg2056", {}, 404),
    ("/ogcapi/tileMatrixSets/nope", {}, 404),
    ("/ogcapi/tileMatrixSets/WebMercatorQuad?compatibility=nope", {}, 400),
    ("/ogcapi/collections/osm/map/tiles/WebMercatorQuad/17/1/1", {}, 404),  # outside limits
    ("/ogcapi/collections/osm/map/tiles/WebMercatorQuad/17/-1/68240", {}, 404),
    ("/ogcapi/collections/osm/map/tiles/WebMercatorQuad/21/0/0", {}, 404),  # no such matrix
    ("/ogcapi/collections/osm/map/tiles/WebMercatorQuad/17/a/68240", {}, 400),
    ("/ogcapi/collections/osm/map/tiles/WebMercatorQuad/17/47790/68240.jpg", {}, 406),
    ("/ogcapi/collections/osm/map/tiles/WebMercatorQuad/17/47790/68240?f=jpeg", {}, 406),
    ("/ogcapi/collections/osm/map/tiles/WebMercatorQuad/17/47790/68240?f=gif", {}, 400),
    (
        "/ogcapi/collections/osm/map/tiles/WebMercatorQuad/17/47790/68240",
        {"Accept": "image/jpeg"},
        406,
    ),
    ("/ogcapi/collections?f=xml", {}, 406),
    ("/ogcapi/collections?f=yaml", {}, 400),
    ("/ogcapi/conformance", {"Accept": "text/html"}, 406),
    ("/ogcapi/nothing/here", {}, 404),
    ("/tms/1.0.0/nope@epsg3857/17/1/1.png", {}, 404),
    ("/tms/1.0.0/osm@epsg2056/17/1/1.png", {}, 404),
    ("/tms/1.0.0/osm@epsg3857/17/68240/1.png", {}, 404),  # outside the layer
    ("/tms/1.0.0/osm@epsg3857/17/68240/83281.jpeg", {}, 404),
    ("/tms/1.0.0/osm@epsg3857/99/0/0.png", {}, 404),
    ("/gmaps/osm@epsg3857/17/x/47790.png", {}, 400),
    ("/xyz/osm/epsg3857/17/68240/47790.gif", {}, 404),
]


@pytest.mark.parametrize(("path", "headers", "status"), ERRORS)
def test_errors_are_json_exceptions_with_the_standards_status(
    server: TileServer, path: str, headers: dict[str, str], status: int
) -> None:
    response = server.get(path, headers)
    assert response.status == status, response.body[:300]
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["access-control-allow-origin"] == "*"
    problem = json.loads(response.body)
    validate_openapi("exception", problem)
    assert problem["status"] == status and problem["detail"]


def test_a_tile_outside_the_layer_says_so_in_the_requests_terms(server: TileServer) -> None:
    problem = json.loads(server.get("/tms/1.0.0/osm@epsg3857/17/68240/1.png").body)
    assert problem["code"] == "TileOutOfRange"
    assert "17/68240/1" in problem["detail"] and "y out of range" in problem["detail"]


# --- GDAL's OGCAPI driver ---------------------------------------------------------------


def _gdal(tool: str) -> str:
    return find_binary(tool, "gdal-bin")


def _system_gdal_environment() -> dict[str, str]:
    """The environment without what the mapnik wheel sets when imported in this process
    (GDAL_DATA, PROJ_LIB: its own data, which Debian's GDAL and PROJ cannot read)."""
    return {k: v for k, v in os.environ.items() if "/mapnik/share/" not in v}


def test_gdal_opens_every_collection(server: TileServer) -> None:
    """gdalinfo on each collection of the demo config. GDAL 3.6 (Debian 12) does not
    reproject a collection's CRS84 extent into the tile matrix set's CRS: the extent is
    given with its documented open options, in that CRS (the tileset's boundingBox)."""
    collections = get_json(server, "/ogcapi/collections")["collections"]
    assert len(collections) == 2
    for collection in collections:
        layer = collection["id"]
        tileset = get_json(server, f"/ogcapi/collections/{layer}/map/tiles/{TMS_IDS[layer]}")
        (minx, miny), (maxx, maxy) = (
            tileset["boundingBox"][k] for k in ("lowerLeft", "upperRight")
        )
        options = [f"-oo MINX={minx}", f"-oo MINY={miny}", f"-oo MAXX={maxx}", f"-oo MAXY={maxy}"]
        result = subprocess.run(
            [_gdal("gdalinfo"), "-json", *" ".join(options).split(),
             f"OGCAPI:{server.base}/ogcapi/collections/{layer}"],
            capture_output=True, text=True, timeout=120, check=False,
            env=_system_gdal_environment(),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["driverShortName"] == "OGCAPI"
        assert info["metadata"][""]["TITLE"] == collection["title"]
        epsg = GRIDS[layer].removeprefix("epsg")
        assert re.search(rf'ID\["EPSG",{epsg}\]\]\s*$', info["coordinateSystem"]["wkt"])
        corners = info["cornerCoordinates"]
        assert corners["upperLeft"] == pytest.approx([minx, maxy], abs=0.05)
        assert corners["lowerRight"] == pytest.approx([maxx, miny], abs=0.05)
        assert [band["colorInterpretation"] for band in info["bands"]] == [
            "Red", "Green", "Blue", "Alpha"]  # fmt: skip


# --- TileJSON in Leaflet, in headless Chromium -------------------------------------------

LEAFLET = Path(__file__).resolve().parents[1] / "data" / "leaflet"


def test_leaflet_shows_the_tilejson_layer_without_a_tile_error(
    server: TileServer, tmp_path: Path
) -> None:
    """Leaflet (vendored in tests/data/leaflet) reads the TileJSON's template, levels and
    bounds, and shows the layer at two levels; the page reports every tile it loaded and
    every tile that failed, and the test waits for that report."""
    tilejson = f"{server.base}/xyz/osm/epsg3857/tilejson.json"
    tiles = re.compile(r'"GET (/xyz/osm/epsg3857/\S+)" (\d{3})')
    before = len(tiles.findall(server.log()))
    page = f"{(LEAFLET / 'tilejson.html').as_uri()}?tilejson={tilejson}"
    done = "(() => { const t = document.getElementById('result').textContent; "
    done += "return t === 'pending' ? null : t; })()"
    report = json.loads(page_value(page, done, tmp_path))
    assert report.get("failure") is None, report
    assert report["errors"] == []
    assert report["levels"] == [13, 14]  # fitted to the bounds (800 x 600), then one closer
    assert report["loaded"] >= 8
    requested = tiles.findall(server.log())[before:]
    assert len(requested) >= report["loaded"] + 1  # the TileJSON, then each tile
    assert {status for _, status in requested} == {"200"}


# --- generated requests ------------------------------------------------------------------

SEGMENTS = st.one_of(
    st.sampled_from(["osm", "osm_lv95", "nope", "WebMercatorQuad", "epsg3857", "epsg2056",
                     "osm@epsg3857", "osm_lv95@epsg2056", "osm@epsg2056", "osm[YEAR=1]",
                     "17", "16", "0", "-1", "+3", "99999999999999999999", "47790", "68240",
                     "83281", "47790.png", "83281.png", "68240.jpg", "1.png", "x.png",
                     "tilejson.json", "map", "tiles", "collections", "1.0.0", "..", "%2e%2e",
                     "%0a", "%00", "%ff", "é", "a b", "[", "@"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)  # fmt: skip
QUERIES = st.sampled_from([
    "", "?f=json", "?f=png", "?f=html", "?f=%00", "?f=", "?YEAR=2024",
    "?compatibility=tms-1.0", "?compatibility=x", "?f=json&f=xml",
])  # fmt: skip
ACCEPTS = st.sampled_from([None, "*/*", "application/json", "image/png", "text/html",
                           "image/*;q=0", "application/json;q=abc", "\u00e9"])  # fmt: skip


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.sampled_from([
        "/ogcapi", "/ogcapi/collections", "/ogcapi/collections/osm/map/tiles",
        "/ogcapi/collections/osm_lv95/map/tiles/epsg2056", "/ogcapi/tileMatrixSets",
        "/tms", "/tms/1.0.0", "/gmaps", "/xyz", "/xyz/osm/epsg3857",
    ]),
    segments=st.lists(SEGMENTS, max_size=4),
    query=QUERIES,
    accept=ACCEPTS,
)  # fmt: skip
def test_generated_requests_get_a_tile_a_document_or_a_json_error(
    server: TileServer, prefix: str, segments: list[str], query: str, accept: str | None
) -> None:
    path = prefix + "".join("/" + quote(s, safe="%@[]+") for s in segments) + query
    headers = {} if accept is None else {"Accept": accept}
    response = server.get(path, headers)
    assert response.status in (200, 204, 400, 404, 406), (
        path,
        response.status,
        response.body[:300],
    )
    assert response.headers["access-control-allow-origin"] == "*"
    kind = response.headers.get("content-type", "")
    if response.status >= 400:
        assert kind.startswith("application/json"), (path, kind)
        validate_openapi("exception", json.loads(response.body))
    elif kind == "image/png":
        assert decoded(response.body).size == (256, 256)
    elif response.status == 200:
        assert kind.startswith(("application/json", "application/xml")), (path, kind)


# --- the demo page's protocol switch ------------------------------------------------------


_MAPS_DONE = """(() => {
  const maps = [...document.querySelectorAll('#maps .map')];
  if (!maps.length || !maps.every((m) => m.dataset.complete || m.dataset.error)) return null;
  return maps.map((m) => ({ ...m.dataset }));
})()"""


def demo_page_maps(server: TileServer, tmp_path: Path, fragment: str) -> dict[str, dict[str, str]]:
    """The demo page's map elements once each has drawn its tiles or given up with an
    error: protocol -> its data attributes (tiles loaded and failed, the error)."""
    maps = page_value(f"{server.base}/#{fragment}", _MAPS_DONE, tmp_path)
    return {m["protocol"]: m for m in maps}


def test_demo_page_shows_a_layer_through_the_three_protocols_side_by_side(
    server: TileServer, tmp_path: Path
) -> None:
    maps = demo_page_maps(server, tmp_path / "merc", "layer=osm&protocol=compare")
    assert list(maps) == ["wmts", "ogcapi", "xyz"]
    for protocol, shown in maps.items():
        assert int(shown["loaded"]) >= 4 and shown["failed"] == "0", (protocol, shown)
    # LV95 is no quadtree: XYZ says so, the two others show it.
    maps = demo_page_maps(server, tmp_path / "lv95", "layer=osm_lv95&protocol=compare")
    assert "need the Web Mercator quadtree" in maps["xyz"]["error"]
    assert "loaded" not in maps["xyz"]
    for protocol in ("wmts", "ogcapi"):
        assert int(maps[protocol]["loaded"]) >= 4 and maps[protocol]["failed"] == "0", maps
