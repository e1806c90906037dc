"""Unit tests of tileserver.wms (GetMap / GetFeatureInfo building, WMS error answers),
of GetFeatureInfo parsing in tileserver.wmts, and of the `type: wms` layer config."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from tests.support.configs import mercator_grid
from tileserver.config import Config, info_extension, parse_config
from tileserver.errors import ConfigError, OWSException
from tileserver.grid import metatile_for
from tileserver.tile_request import FeatureInfoRequest, TileRequest
from tileserver.types import BBox, TileCoord
from tileserver.wms import error_message, featureinfo_params, getmap_params, is_service_exception
from tileserver.wmts import normalize_kvp, parse_kvp, parse_rest

WGS84 = {
    "srs": "EPSG:4326",
    "bbox": [-180, -90, 180, 90],
    "resolutions": [0.703125 / 2**z for z in range(18)],
}


def _config(**wms: Any) -> Config:
    base = {"type": "wms", "url": "http://127.0.0.1:9/cgi-bin/mapserv?map=/m.map", "layers": "osm"}
    data: dict[str, Any] = {
        "grids": {"merc": mercator_grid(), "wgs84": WGS84},
        "layers": {
            "plain": {**base, "grid": "merc"},
            "geo": {**base, "grid": "wgs84", "version": "1.3.0", **wms},
            "info": {
                **base,
                "grid": "merc",
                "query_layers": "buildings,roads",
                "info_formats": ["text/plain", "application/vnd.ogc.gml"],
                "params": {"TRANSPARENT": True, "map_resolution": 96},
                "dimensions": [{"name": "TIME", "values": ["2020", "2021"], "default": "2021"}],
            },
        },
    }
    return parse_config(data, base_dir=Path("/"))


CONFIG = _config()


def test_getmap_covers_the_metatile_and_its_buffer() -> None:
    layer = CONFIG.layers["plain"]
    metatile = metatile_for(layer.grid, TileCoord(17, 47790, 68240), 8, 32)
    params = dict(
        getmap_params(
            layer.wms,  # type: ignore[arg-type]
            layer.grid,
            metatile.bbox,
            metatile.width,
            metatile.height,
            "image/png",
        )
    )
    assert params["REQUEST"] == "GetMap" and params["VERSION"] == "1.1.1"
    assert params["SRS"] == "EPSG:3857" and "CRS" not in params
    assert (params["WIDTH"], params["HEIGHT"]) == ("2112", "2112")  # 8 x 256 + 2 x 32
    minx, miny, maxx, maxy = (float(v) for v in params["BBOX"].split(","))
    assert BBox(minx, miny, maxx, maxy) == metatile.bbox
    span = layer.grid.resolutions[17] * 32
    core = layer.grid.tile_bbox(TileCoord(17, 47784, 68240))  # the block's top-left tile
    assert minx == pytest.approx(core.minx - span) and maxy == pytest.approx(core.maxy + span)
    assert params["FORMAT"] == "image/png" and params["STYLES"] == ""
    assert "SALT" not in params


def test_wms_1_3_0_uses_crs_and_the_crs_axis_order() -> None:
    layer = CONFIG.layers["geo"]
    bbox = BBox(7.40, 43.72, 7.44, 43.76)
    params = dict(getmap_params(layer.wms, layer.grid, bbox, 512, 512, "image/png"))  # type: ignore[arg-type]
    assert params["CRS"] == "EPSG:4326" and "SRS" not in params
    assert [float(v) for v in params["BBOX"].split(",")] == [43.72, 7.40, 43.76, 7.44]


def test_params_override_format_and_salt_busts_caches() -> None:
    config = _config(
        params={"FORMAT": "image/png; mode=8bit", "STYLES": "night"}, generate_salt=True
    )
    layer = config.layers["geo"]
    first = getmap_params(layer.wms, layer.grid, BBOX, 256, 256, "image/png")  # type: ignore[arg-type]
    second = getmap_params(layer.wms, layer.grid, BBOX, 256, 256, "image/png")  # type: ignore[arg-type]
    names = [name for name, _ in first]
    assert names.count("FORMAT") == 1 and names.count("STYLES") == 1
    assert dict(first)["FORMAT"] == "image/png; mode=8bit" and dict(first)["STYLES"] == "night"
    assert dict(first)["SALT"] != dict(second)["SALT"]


BBOX = BBox(7.40, 43.72, 7.44, 43.76)


def test_featureinfo_asks_for_the_pixel_of_the_tile() -> None:
    layer = CONFIG.layers["info"]
    coord = TileCoord(16, 23895, 34120)
    bbox = layer.grid.tile_bbox(coord)
    params = dict(
        featureinfo_params(layer.wms, layer.grid, bbox, 256, 10, 200, "text/plain")  # type: ignore[arg-type]
    )
    assert params["REQUEST"] == "GetFeatureInfo"
    assert (params["X"], params["Y"]) == ("10", "200") and "I" not in params
    assert params["QUERY_LAYERS"] == "buildings,roads" and params["LAYERS"] == "osm"
    assert params["INFO_FORMAT"] == "text/plain" and params["WIDTH"] == "256"
    assert params["TRANSPARENT"] == "TRUE" and params["map_resolution"] == "96"
    geo = _config(query_layers="osm").layers["geo"]
    params = dict(featureinfo_params(geo.wms, geo.grid, BBOX, 256, 3, 4, "text/plain"))  # type: ignore[arg-type]
    assert (params["I"], params["J"]) == ("3", "4") and "X" not in params


@pytest.mark.parametrize(
    ("content_type", "body", "expected", "exception"),
    [
        (
            "application/vnd.ogc.se_xml",
            b'<?xml version="1.0"?><ServiceExceptionReport version="1.1.1"><ServiceException '
            b'code="LayerNotDefined">msWMSLoadGetMapParams(): Invalid layer(s) given in the '
            b"LAYERS parameter. A layer might be disabled &amp; hidden.</ServiceException>"
            b"</ServiceExceptionReport>",
            "msWMSLoadGetMapParams(): Invalid layer(s) given in the LAYERS parameter. "
            "A layer might be disabled & hidden.",
            True,
        ),
        (
            "text/xml; charset=UTF-8",
            b'<ogc:ServiceExceptionReport xmlns:ogc="http://www.opengis.net/ogc">'
            b"<ogc:ServiceException><![CDATA[database is down]]></ogc:ServiceException>"
            b"</ogc:ServiceExceptionReport>",
            "database is down",
            True,
        ),
        (
            "text/html",
            b"<html><head><title>500</title></head><body><h1>Internal   Server\nError</h1>"
            b"</body></html>",
            "500 Internal Server Error",
            False,
        ),
        ("text/plain", b"", "an empty text/plain answer", False),
        ("text/plain", b"x" * 1000, "x" * 300 + "...", False),
    ],
)
def test_error_answers_are_summarised(
    content_type: str, body: bytes, expected: str, exception: bool
) -> None:
    assert error_message(content_type, body) == expected
    assert is_service_exception(content_type, body) is exception


# --- GetFeatureInfo requests -----------------------------------------------------------------

INFO_KVP = {
    "service": "WMTS",
    "request": "GetFeatureInfo",
    "version": "1.0.0",
    "layer": "info",
    "style": "default",
    "format": "image/png",
    "tilematrixset": "merc",
    "tilematrix": "16",
    "tilerow": "23895",
    "tilecol": "34120",
    "i": "10",
    "j": "200",
    "infoformat": "text/plain",
}


def test_kvp_getfeatureinfo() -> None:
    query = urlencode({k.upper(): v for k, v in INFO_KVP.items()} | {"TIME": "2020"})
    parsed = parse_kvp(CONFIG, normalize_kvp(parse_qsl(query, keep_blank_values=True)))
    assert isinstance(parsed, FeatureInfoRequest)
    assert (parsed.i, parsed.j, parsed.info_format) == (10, 200, "text/plain")
    assert parsed.tile.coord == TileCoord(16, 23895, 34120)
    assert parsed.tile.dimensions == ("2020",)


def test_rest_getfeatureinfo_and_tile_share_the_prefix() -> None:
    base = "info/default/2021/merc/16/23895/34120"
    tile = parse_rest(CONFIG, base + ".png")
    assert isinstance(tile, TileRequest)
    info = parse_rest(CONFIG, base + "/200/10.gml")
    assert isinstance(info, FeatureInfoRequest)
    assert (info.i, info.j, info.info_format) == (10, 200, "application/vnd.ogc.gml")
    assert info.tile == tile


def _kvp_error(**changes: str | None) -> OWSException:
    params = {k: v for k, v in {**INFO_KVP, **changes}.items() if v is not None}
    with pytest.raises(OWSException) as caught:
        parse_kvp(CONFIG, params)
    return caught.value


@pytest.mark.parametrize(
    ("changes", "code", "locator", "status"),
    [
        ({"layer": "plain"}, "OperationNotSupported", "request", 501),
        ({"i": "256"}, "PointIJOutOfRange", "i", 400),
        ({"j": "-1"}, "PointIJOutOfRange", "j", 400),
        ({"i": "ten"}, "InvalidParameterValue", "i", 400),
        ({"j": "1e3"}, "InvalidParameterValue", "j", 400),
        ({"i": None}, "MissingParameterValue", "i", 400),
        ({"infoformat": None}, "MissingParameterValue", "infoformat", 400),
        ({"infoformat": "text/html"}, "InvalidParameterValue", "infoformat", 400),
        ({"tilerow": "99999999"}, "TileOutOfRange", "tilerow", 400),
    ],
)
def test_kvp_getfeatureinfo_errors(
    changes: dict[str, str | None], code: str, locator: str, status: int
) -> None:
    error = _kvp_error(**changes)
    assert (error.code, error.locator, error.status) == (code, locator, status)


@pytest.mark.parametrize(
    ("path", "code", "locator"),
    [
        ("plain/default/merc/16/23895/34120/0/0.txt", "OperationNotSupported", "request"),
        ("info/default/2021/merc/16/23895/34120/0/256.txt", "PointIJOutOfRange", "i"),
        ("info/default/2021/merc/16/23895/34120/x/0.txt", "InvalidParameterValue", "j"),
        ("info/default/2021/merc/16/23895/34120/0/0.html", "InvalidParameterValue", "infoformat"),
        ("info/default/2021/merc/16/23895/34120/0/0/1.txt", "NotFound", None),
    ],
)
def test_rest_getfeatureinfo_errors(path: str, code: str, locator: str | None) -> None:
    with pytest.raises(OWSException) as caught:
        parse_rest(CONFIG, path)
    assert (caught.value.code, caught.value.locator) == (code, locator)


# --- configuration ---------------------------------------------------------------------------


def test_info_extensions() -> None:
    assert info_extension("application/vnd.ogc.gml") == "gml"
    assert info_extension("text/plain") == "txt"
    assert info_extension("application/vnd.geo+json") == "json"
    assert info_extension("image/x-weird.type") == "xweirdtype"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "ftp://x"}, "layers.geo.url: expected an http:// or https:// URL, got 'ftp://x'"),
        ({"version": "1.0.0"}, "layers.geo.version: expected one of 1.1.1, 1.3.0, got '1.0.0'"),
        ({"params": {"BBOX": "0,0,1,1"}}, "layers.geo.params.BBOX: set by tileserver"),
        ({"params": ["a"]}, "layers.geo.params: expected a mapping of names to strings"),
        ({"info_formats": ["text/plain"]}, "layers.geo.info_formats: needs query_layers"),
        ({"timeout": 0}, "layers.geo.timeout"),
        ({"retries": -1}, "layers.geo.retries"),
        (
            {"query_layers": "a", "info_formats": ["text/xml", "application/xml"]},
            "would share the REST extension '.xml'",
        ),
        ({"connection": "host=db"}, "layers.geo.connection: only for layers of type 'mapnik'"),
    ],
)
def test_wms_config_mistakes(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(**changes)
    assert any(m.startswith(message) or message in m for m in caught.value.messages), (
        caught.value.messages
    )


def test_wms_keys_on_a_mapnik_layer_are_refused(tmp_path: Path) -> None:
    style = tmp_path / "s.xml"
    style.write_text("<Map/>")
    data = {
        "grids": {"merc": mercator_grid()},
        "layers": {
            "m": {"type": "mapnik", "mapfile": str(style), "grid": "merc", "url": "http://x"}
        },
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path)
    assert caught.value.messages == [
        "layers.m.url: only for layers of type 'wms' (this layer is of type 'mapnik')"
    ]
