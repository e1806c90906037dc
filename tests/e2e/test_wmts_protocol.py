"""WMTS 1.0.0 over HTTP (the real application, served in the test process): Capabilities
(schema-valid), KVP and REST, OWS exception reports."""

from __future__ import annotations

import io
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from lxml import etree
from PIL import Image

from tests.support.app_server import AppServer
from tests.support.daemons import Memcached
from tests.support.schemas import validate_capabilities, validate_exception_report
from tests.support.server import demo_config, fetch

NS = {
    "wmts": "http://www.opengis.net/wmts/1.0",
    "ows": "http://www.opengis.net/ows/1.1",
    "xlink": "http://www.w3.org/1999/xlink",
}

DIMENSION_LAYER = {
    "title": "Monaco with a dimension",
    "grid": "epsg3857",
    "bbox": [824000, 5421800, 829500, 5428000],
    "dimensions": [{"name": "YEAR", "values": ["2024", "2025"], "default": "2025"}],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    daemon = Memcached()
    daemon.start()
    config = demo_config(daemon.address, osm_year=DIMENSION_LAYER)
    config["metadata"]["abstract"] = 'Escaping <test> & "quotes"'
    config["provider"]["contact"] = {
        "name": "Map Team",
        "info": {"address": {"city": "Monaco", "email": "maps@example.org"}},
    }
    server = AppServer(config, tmp_path_factory.mktemp("wmts"))
    server.start()
    yield server
    server.stop()
    daemon.stop()


def kvp(server: AppServer, **params: str) -> tuple[int, dict[str, str], bytes]:
    r = fetch(f"{server.base}/wmts?{urlencode(params)}")
    return r.status, r.headers, r.body


GETTILE = {
    "SERVICE": "WMTS",
    "REQUEST": "GetTile",
    "VERSION": "1.0.0",
    "LAYER": "osm",
    "STYLE": "default",
    "FORMAT": "image/png",
    "TILEMATRIXSET": "epsg3857",
    "TILEMATRIX": "17",
    "TILEROW": "47790",
    "TILECOL": "68240",
}


def test_capabilities_rest_and_kvp_are_schema_valid_and_identical(server: AppServer) -> None:
    rest = server.get("/wmts/1.0.0/WMTSCapabilities.xml")
    assert rest.status == 200
    assert rest.headers["content-type"].startswith("application/xml")
    validate_capabilities(rest.body)
    status, _, body = kvp(server, service="WMTS", request="GetCapabilities")
    assert status == 200
    assert body == rest.body


def test_capabilities_describe_both_grids_exactly(server: AppServer) -> None:
    doc = etree.fromstring(server.get("/wmts/1.0.0/WMTSCapabilities.xml").body)
    sets = {
        tms.findtext("ows:Identifier", namespaces=NS): tms
        for tms in doc.iterfind("wmts:Contents/wmts:TileMatrixSet", NS)
    }
    assert set(sets) == {"epsg3857", "epsg2056"}
    merc = sets["epsg3857"]
    assert merc.findtext("ows:SupportedCRS", namespaces=NS) == "urn:ogc:def:crs:EPSG::3857"
    z0 = merc.find("wmts:TileMatrix", NS)
    assert float(z0.findtext("wmts:ScaleDenominator", namespaces=NS)) == pytest.approx(
        559082264.0287178, rel=1e-12
    )
    assert z0.findtext("wmts:TopLeftCorner", namespaces=NS).split() == [
        "-20037508.342789244",
        "20037508.342789244",
    ]
    z17 = merc.findall("wmts:TileMatrix", NS)[17]
    assert z17.findtext("wmts:MatrixWidth", namespaces=NS) == str(2**17)
    lv95 = sets["epsg2056"]
    assert lv95.findtext("ows:SupportedCRS", namespaces=NS) == "urn:ogc:def:crs:EPSG::2056"
    first = lv95.find("wmts:TileMatrix", NS)
    assert float(first.findtext("wmts:ScaleDenominator", namespaces=NS)) == pytest.approx(
        4000 / 0.00028
    )
    assert first.findtext("wmts:TopLeftCorner", namespaces=NS).split() == ["2420000", "1350000"]
    # 480 km x 520 km at 4000 m x 256 px per tile: 1 x 1; at 0.25 m: 7500 x 8125.
    last = lv95.findall("wmts:TileMatrix", NS)[-1]
    assert last.findtext("wmts:MatrixWidth", namespaces=NS) == "7500"
    assert last.findtext("wmts:MatrixHeight", namespaces=NS) == "8125"
    # Each TileMatrixSet advertises its grid's extent (the coarse LV95 matrices run past it).
    for tms, crs, lower, upper in (
        (
            merc,
            "urn:ogc:def:crs:EPSG::3857",
            ["-20037508.342789244"] * 2,
            ["20037508.342789244"] * 2,
        ),
        (lv95, "urn:ogc:def:crs:EPSG::2056", ["2420000", "830000"], ["2900000", "1350000"]),
    ):
        box = tms.find("ows:BoundingBox", NS)
        assert box.get("crs") == crs
        assert box.findtext("ows:LowerCorner", namespaces=NS).split() == lower
        assert box.findtext("ows:UpperCorner", namespaces=NS).split() == upper

    layers = {
        layer.findtext("ows:Identifier", namespaces=NS): layer
        for layer in doc.iterfind("wmts:Contents/wmts:Layer", NS)
    }
    assert set(layers) == {"osm", "osm_lv95", "osm_year"}
    limits = next(
        lim
        for lim in layers["osm"].iterfind(".//wmts:TileMatrixLimits", NS)
        if lim.findtext("wmts:TileMatrix", namespaces=NS) == "17"
    )
    assert [limits.findtext(f"wmts:{t}", namespaces=NS) for t in
            ("MinTileRow", "MaxTileRow", "MinTileCol", "MaxTileCol")] == [
        "47782", "47803", "68231", "68249"]  # fmt: skip
    template = layers["osm_year"].find("wmts:ResourceURL", NS).get("template")
    assert template.endswith(
        "/wmts/1.0.0/osm_year/{Style}/{YEAR}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.png"
    )
    lower = layers["osm"].findtext("ows:WGS84BoundingBox/ows:LowerCorner", namespaces=NS)
    lon, lat = (float(v) for v in lower.split())
    assert 7.39 < lon < 7.41 and 43.71 < lat < 43.73
    abstract = doc.findtext("ows:ServiceIdentification/ows:Abstract", namespaces=NS)
    assert abstract == 'Escaping <test> & "quotes"'


def test_kvp_and_rest_tiles_are_the_same(server: AppServer) -> None:
    status, headers, body = kvp(server, **GETTILE)
    assert status == 200
    assert headers["content-type"] == "image/png"
    rest = server.get("/wmts/1.0.0/osm/default/epsg3857/17/47790/68240.png")
    assert rest.body == body
    assert Image.open(io.BytesIO(body)).size == (256, 256)


def test_kvp_parameter_names_are_case_insensitive(server: AppServer) -> None:
    mixed = {k.lower() if i % 2 else k.title(): v for i, (k, v) in enumerate(GETTILE.items())}
    status, _, body = kvp(server, **mixed)
    assert status == 200
    assert body[:4] == b"\x89PNG"


def test_dimension_values_in_rest_and_kvp(server: AppServer) -> None:
    rest = server.get("/wmts/1.0.0/osm_year/default/2024/epsg3857/17/47790/68240.png")
    assert rest.status == 200
    default = kvp(server, **{**GETTILE, "LAYER": "osm_year"})
    assert default[0] == 200
    explicit = kvp(server, **{**GETTILE, "LAYER": "osm_year", "YEAR": "2025"})
    assert explicit[2] == default[2]


ERRORS = [
    # (parameters changed from a valid GetTile, exceptionCode, locator, HTTP status)
    ({"SERVICE": None}, "MissingParameterValue", "service", 400),
    ({"REQUEST": None}, "MissingParameterValue", "request", 400),
    ({"VERSION": None}, "MissingParameterValue", "version", 400),
    ({"LAYER": None}, "MissingParameterValue", "layer", 400),
    ({"STYLE": None}, "MissingParameterValue", "style", 400),
    ({"FORMAT": None}, "MissingParameterValue", "format", 400),
    ({"TILEMATRIXSET": None}, "MissingParameterValue", "tilematrixset", 400),
    ({"TILEMATRIX": None}, "MissingParameterValue", "tilematrix", 400),
    ({"TILEROW": None}, "MissingParameterValue", "tilerow", 400),
    ({"TILECOL": None}, "MissingParameterValue", "tilecol", 400),
    ({"SERVICE": "WMS"}, "InvalidParameterValue", "service", 400),
    ({"VERSION": "2.0.0"}, "InvalidParameterValue", "version", 400),
    ({"LAYER": "nope"}, "InvalidParameterValue", "layer", 400),
    ({"LAYER": "OSM"}, "InvalidParameterValue", "layer", 400),  # values are case-sensitive
    ({"STYLE": "fancy"}, "InvalidParameterValue", "style", 400),
    ({"FORMAT": "image/jpeg"}, "InvalidParameterValue", "format", 400),
    ({"TILEMATRIXSET": "epsg2056"}, "InvalidParameterValue", "tilematrixset", 400),
    ({"TILEMATRIX": "99"}, "InvalidParameterValue", "tilematrix", 400),
    ({"TILEROW": "abc"}, "InvalidParameterValue", "tilerow", 400),
    ({"TILECOL": "1.5"}, "InvalidParameterValue", "tilecol", 400),
    ({"TILEROW": "0"}, "TileOutOfRange", "tilerow", 400),
    ({"TILEROW": "-1"}, "TileOutOfRange", "tilerow", 400),
    ({"TILECOL": "999999999"}, "TileOutOfRange", "tilecol", 400),
    ({"LAYER": "osm_year", "YEAR": "1999"}, "InvalidParameterValue", "year", 400),
    ({"REQUEST": "GetFeatureInfo"}, "OperationNotSupported", "request", 501),
    ({"REQUEST": "GetMap"}, "OperationNotSupported", "request", 501),
]


def _check_report(body: bytes, code: str, locator: str | None) -> None:
    validate_exception_report(body)
    doc = etree.fromstring(body)
    exception = doc.find("ows:Exception", NS)
    assert exception.get("exceptionCode") == code
    assert exception.get("locator") == locator
    assert exception.findtext("ows:ExceptionText", namespaces=NS)


@pytest.mark.parametrize(("change", "code", "locator", "status"), ERRORS)
def test_kvp_errors_are_ows_exception_reports(
    server: AppServer, change: dict[str, str | None], code: str, locator: str, status: int
) -> None:
    params = {k: v for k, v in {**GETTILE, **change}.items() if v is not None}
    got_status, headers, body = kvp(server, **params)
    assert got_status == status
    assert headers["content-type"].startswith("application/xml")
    _check_report(body, code, locator)


REST_ERRORS = [
    ("nope/default/epsg3857/17/47790/68240.png", "InvalidParameterValue", "layer", 400),
    ("osm/fancy/epsg3857/17/47790/68240.png", "InvalidParameterValue", "style", 400),
    ("osm/default/epsg2056/17/47790/68240.png", "InvalidParameterValue", "tilematrixset", 400),
    ("osm/default/epsg3857/77/47790/68240.png", "InvalidParameterValue", "tilematrix", 400),
    ("osm/default/epsg3857/17/x/68240.png", "InvalidParameterValue", "tilerow", 400),
    ("osm/default/epsg3857/17/47790/68240.jpeg", "InvalidParameterValue", "format", 400),
    ("osm/default/epsg3857/17/1/68240.png", "TileOutOfRange", "tilerow", 400),
    ("osm/default/epsg3857/17/47790/1.png", "TileOutOfRange", "tilecol", 400),
    ("osm_year/default/1999/epsg3857/17/47790/68240.png", "InvalidParameterValue", "year", 400),
    ("osm/default/epsg3857/17/47790", "NotFound", None, 404),
    ("osm/default/epsg3857/17/47790/68240", "NotFound", None, 404),
    ("osm/default/extra/epsg3857/17/47790/68240.png", "NotFound", None, 404),
    ("osm_year/default/epsg3857/17/47790/68240.png", "NotFound", None, 404),
]


@pytest.mark.parametrize(("path", "code", "locator", "status"), REST_ERRORS)
def test_rest_errors(
    server: AppServer, path: str, code: str, locator: str | None, status: int
) -> None:
    r = server.get("/wmts/1.0.0/" + path)
    assert r.status == status
    _check_report(r.body, code, locator)


def test_unknown_paths_are_404(server: AppServer) -> None:
    assert server.get("/nothing/here").status == 404
    assert server.get("/wmts/2.0.0/WMTSCapabilities.xml").status == 404
    assert server.get("/static/../config.yaml").status in (403, 404)


def test_demo_page_and_its_scripts_are_served(server: AppServer) -> None:
    page = server.get("/")
    assert page.status == 200
    assert b"wmts/1.0.0/WMTSCapabilities.xml" in page.body + server.get("/static/demo.js").body
    assert server.get("/static/vendor/ol.js").status == 200


def test_owslib_reads_capabilities_and_fetches_a_tile_of_every_layer(server: AppServer) -> None:
    from owslib.wmts import WebMapTileService

    wmts = WebMapTileService(server.base + "/wmts/1.0.0/WMTSCapabilities.xml")
    assert set(wmts.contents) == {"osm", "osm_lv95", "osm_year"}
    assert set(wmts.tilematrixsets) == {"epsg3857", "epsg2056"}
    where = {"osm": ("17", 47790, 68240), "osm_year": ("17", 47790, 68240),
             "osm_lv95": ("25", 1980, 699)}  # fmt: skip
    for name, (matrix, row, col) in where.items():
        layer = wmts.contents[name]
        matrix_set = next(iter(layer.tilematrixsetlinks))
        limits = layer.tilematrixsetlinks[matrix_set].tilematrixlimits[matrix]
        assert limits.mintilerow <= row <= limits.maxtilerow
        assert limits.mintilecol <= col <= limits.maxtilecol
        tile = wmts.gettile(
            layer=name, tilematrixset=matrix_set, tilematrix=matrix, row=row, column=col,
            format="image/png", style="default",
        )  # fmt: skip
        image = Image.open(io.BytesIO(tile.read()))
        assert image.size == (256, 256)
        assert len(image.convert("RGB").getcolors(65536) or []) > 20
