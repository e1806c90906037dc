"""Unit tests of tileserver.wmts: GetTile in KVP and REST, and every OWS exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tileserver.config import Config, parse_config
from tileserver.errors import OWSException
from tileserver.tile_request import TileRequest
from tileserver.types import TileCoord
from tileserver.wmts import CapabilitiesRequest, normalize_kvp, parse_kvp, parse_rest

MAPFILE = "/work/main/config/styles/osm.xml"
HALF = 20037508.342789244


def _config() -> Config:
    data: dict[str, Any] = {
        "grids": {
            "epsg3857": {
                "srs": "EPSG:3857",
                "bbox": [-HALF, -HALF, HALF, HALF],
                "resolutions": [156543.03392804097 / 2**z for z in range(21)],
            },
            "epsg2056": {
                "srs": "EPSG:2056",
                "bbox": [2420000, 1030000, 2900000, 1350000],
                "resolutions": [4000, 1000, 250, 100, 10, 1],
                "matrix_identifier": "resolution",
            },
        },
        "layer_default": {"type": "mapnik", "mapfile": MAPFILE},
        "layers": {
            # z17 limits of this bbox: rows 47782..47803, cols 68231..68249
            "osm": {"grid": "epsg3857", "bbox": [824000, 5421800, 829500, 5428000]},
            "photo": {"grid": "epsg3857", "extension": "jpeg", "wmts_style": "natural"},
            "timed": {
                "grid": "epsg3857",
                "dimensions": [
                    {"name": "TIME", "values": ["2020", "2021"], "default": "2021"},
                    {"name": "Elevation", "values": ["low", "high"], "default": "low"},
                ],
            },
            "swiss": {"grid": "epsg2056"},
        },
    }
    return parse_config(data, base_dir=Path("/"))


CONFIG = _config()

VALID = {
    "service": "WMTS",
    "request": "GetTile",
    "version": "1.0.0",
    "layer": "osm",
    "style": "default",
    "format": "image/png",
    "tilematrixset": "epsg3857",
    "tilematrix": "17",
    "tilerow": "47790",
    "tilecol": "68240",
}


def kvp(**changes: str | None) -> dict[str, str]:
    """VALID with some parameters changed (None removes one)."""
    params = dict(VALID)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


def ows_error(call: Any, *args: Any) -> tuple[str, str | None, int]:
    with pytest.raises(OWSException) as info:
        call(*args)
    return info.value.code, info.value.locator, info.value.status


# --- KVP ------------------------------------------------------------------------------------


def test_valid_kvp_get_tile() -> None:
    request = parse_kvp(CONFIG, VALID)
    assert isinstance(request, TileRequest)
    assert request.layer is CONFIG.layers["osm"]
    assert request.coord == TileCoord(17, 47790, 68240)
    assert request.style == "default"
    assert request.dimensions == ()


@pytest.mark.parametrize(
    "name",
    [
        "service",
        "request",
        "version",
        "layer",
        "style",
        "format",
        "tilematrixset",
        "tilematrix",
        "tilerow",
        "tilecol",
    ],
)
def test_missing_parameter(name: str) -> None:
    assert ows_error(parse_kvp, CONFIG, kvp(**{name: None})) == (
        "MissingParameterValue",
        name,
        400,
    )


@pytest.mark.parametrize(
    "name",
    ["service", "request", "version", "layer", "format", "tilematrixset", "tilematrix"],
)
def test_empty_parameter_counts_as_missing(name: str) -> None:
    assert ows_error(parse_kvp, CONFIG, kvp(**{name: ""}))[:2] == ("MissingParameterValue", name)


def test_empty_style_means_the_default_style() -> None:
    request = parse_kvp(CONFIG, kvp(style=""))
    assert isinstance(request, TileRequest)
    assert request.style == "default"


INVALID = "InvalidParameterValue"
OUT = "TileOutOfRange"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # values are case-sensitive
        ({"service": "wmts"}, (INVALID, "service", 400)),
        ({"service": "WMS"}, (INVALID, "service", 400)),
        ({"version": "1.0"}, (INVALID, "version", 400)),
        ({"version": "2.0.0"}, (INVALID, "version", 400)),
        ({"layer": "roads"}, (INVALID, "layer", 400)),
        ({"layer": "OSM"}, (INVALID, "layer", 400)),
        ({"style": "night"}, (INVALID, "style", 400)),
        ({"style": "Default"}, (INVALID, "style", 400)),
        ({"format": "image/jpeg"}, (INVALID, "format", 400)),
        ({"format": "image/PNG"}, (INVALID, "format", 400)),
        ({"format": "png"}, (INVALID, "format", 400)),
        ({"tilematrixset": "epsg2056"}, (INVALID, "tilematrixset", 400)),
        ({"tilematrixset": "EPSG3857"}, (INVALID, "tilematrixset", 400)),
        ({"tilematrix": "21"}, (INVALID, "tilematrix", 400)),
        ({"tilematrix": "-1"}, (INVALID, "tilematrix", 400)),
        ({"tilematrix": "017"}, (INVALID, "tilematrix", 400)),
        ({"tilematrix": "EPSG:3857:17"}, (INVALID, "tilematrix", 400)),
        ({"tilerow": "abc"}, (INVALID, "tilerow", 400)),
        ({"tilerow": "1.5"}, (INVALID, "tilerow", 400)),
        ({"tilerow": "1e3"}, (INVALID, "tilerow", 400)),
        ({"tilerow": " 47790"}, (INVALID, "tilerow", 400)),
        ({"tilerow": "0x10"}, (INVALID, "tilerow", 400)),
        ({"tilerow": "1" * 30}, (INVALID, "tilerow", 400)),
        ({"tilecol": "abc"}, (INVALID, "tilecol", 400)),
        # fullwidth digits
        ({"tilecol": "\uff16\uff18\uff12\uff14\uff10"}, (INVALID, "tilecol", 400)),
        ({"tilecol": ""}, ("MissingParameterValue", "tilecol", 400)),
        # the layer's limits at z17: rows 47782..47803, cols 68231..68249
        ({"tilerow": "47781"}, (OUT, "tilerow", 400)),
        ({"tilerow": "47804"}, (OUT, "tilerow", 400)),
        ({"tilerow": "-1"}, (OUT, "tilerow", 400)),
        ({"tilecol": "68230"}, (OUT, "tilecol", 400)),
        ({"tilecol": "68250"}, (OUT, "tilecol", 400)),
        ({"tilecol": "-68240"}, (OUT, "tilecol", 400)),
        ({"tilematrix": "0", "tilerow": "1", "tilecol": "0"}, (OUT, "tilerow", 400)),
        ({"tilematrix": "0", "tilerow": "0", "tilecol": "1"}, (OUT, "tilecol", 400)),
        # operations
        ({"request": "GetFeatureInfo"}, ("OperationNotSupported", "request", 501)),
        ({"request": "Foo"}, ("OperationNotSupported", "request", 501)),
        ({"request": "gettile"}, ("OperationNotSupported", "request", 501)),
    ],
)
def test_kvp_errors(changes: dict[str, str], expected: tuple[str, str, int]) -> None:
    assert ows_error(parse_kvp, CONFIG, kvp(**changes)) == expected


@pytest.mark.parametrize(
    ("row", "col"),
    [("47782", "68231"), ("47803", "68249"), ("+47790", "68240"), ("047790", "068240")],
)
def test_rows_and_columns_at_the_limits_are_served(row: str, col: str) -> None:
    request = parse_kvp(CONFIG, kvp(tilerow=row, tilecol=col))
    assert isinstance(request, TileRequest)
    assert request.coord == TileCoord(17, int(row), int(col))


def test_tile_outside_the_layer_bbox_but_inside_the_grid_is_out_of_range() -> None:
    assert ows_error(parse_kvp, CONFIG, kvp(tilematrix="17", tilerow="0", tilecol="0")) == (
        OUT,
        "tilerow",
        400,
    )


def test_parameter_names_are_case_insensitive() -> None:
    items = [("sErViCe", "WMTS"), ("REQUEST", "GetTile"), ("Version", "1.0.0")]
    items += [
        (k.upper(), v) for k, v in VALID.items() if k not in ("service", "request", "version")
    ]
    request = parse_kvp(CONFIG, normalize_kvp(items))
    assert isinstance(request, TileRequest)
    assert request.coord == TileCoord(17, 47790, 68240)


def test_normalize_kvp_lowers_names_not_values_and_keeps_the_first_value() -> None:
    assert normalize_kvp([("LAYER", "OSM"), ("layer", "other"), ("Style", "Default")]) == {
        "layer": "OSM",
        "style": "Default",
    }


def test_lower_case_service_value_fails_even_after_normalisation() -> None:
    params = normalize_kvp(
        [("SERVICE", "wmts"), *((k, v) for k, v in VALID.items() if k != "service")]
    )
    assert ows_error(parse_kvp, CONFIG, params) == (INVALID, "service", 400)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"service": "WMTS", "request": "GetCapabilities"}, None),
        ({"service": "WMTS", "request": "GetCapabilities", "acceptversions": "1.0.0"}, None),
        ({"service": "WMTS", "request": "GetCapabilities", "acceptversions": "2.0.0,1.0.0"}, None),
        (
            {"service": "WMTS", "request": "GetCapabilities", "acceptversions": "2.0.0"},
            ("VersionNegotiationFailed", "acceptversions", 400),
        ),
        ({"request": "GetCapabilities"}, ("MissingParameterValue", "service", 400)),
    ],
)
def test_get_capabilities(params: dict[str, str], expected: tuple[str, str, int] | None) -> None:
    if expected is None:
        assert isinstance(parse_kvp(CONFIG, params), CapabilitiesRequest)
    else:
        assert ows_error(parse_kvp, CONFIG, params) == expected


def test_jpeg_layer_with_its_own_style() -> None:
    request = parse_kvp(
        CONFIG,
        kvp(
            layer="photo",
            style="natural",
            format="image/jpeg",
            tilematrix="3",
            tilerow="7",
            tilecol="0",
        ),
    )
    assert isinstance(request, TileRequest)
    assert (request.style, request.coord) == ("natural", TileCoord(3, 7, 0))
    assert ows_error(parse_kvp, CONFIG, kvp(layer="photo", format="image/jpeg")) == (
        INVALID,
        "style",
        400,
    )


def test_resolution_identifiers_as_tile_matrix() -> None:
    params = kvp(
        layer="swiss", tilematrixset="epsg2056", tilematrix="250", tilerow="4", tilecol="7"
    )
    request = parse_kvp(CONFIG, params)
    assert isinstance(request, TileRequest)
    assert request.coord == TileCoord(2, 4, 7)
    for unknown in ("2", "250.0", "300"):
        assert ows_error(parse_kvp, CONFIG, {**params, "tilematrix": unknown}) == (
            INVALID,
            "tilematrix",
            400,
        )


# --- dimensions -----------------------------------------------------------------------------


TIMED = kvp(layer="timed", tilematrix="2", tilerow="1", tilecol="3")


@pytest.mark.parametrize(
    ("extra", "values"),
    [
        ({}, ("2021", "low")),
        ({"time": "2020"}, ("2020", "low")),
        ({"time": ""}, ("2021", "low")),
        ({"elevation": "high"}, ("2021", "high")),
        ({"time": "2020", "elevation": "high"}, ("2020", "high")),
    ],
)
def test_kvp_dimension_defaults_apply(extra: dict[str, str], values: tuple[str, str]) -> None:
    request = parse_kvp(CONFIG, {**TIMED, **extra})
    assert isinstance(request, TileRequest)
    assert request.dimensions == values
    assert request.coord == TileCoord(2, 1, 3)


def test_kvp_dimension_names_are_case_insensitive() -> None:
    items = [*TIMED.items(), ("TIME", "2020"), ("ELEVATION", "high")]
    request = parse_kvp(CONFIG, normalize_kvp(items))
    assert isinstance(request, TileRequest)
    assert request.dimensions == ("2020", "high")


@pytest.mark.parametrize(
    ("extra", "locator"),
    [
        ({"time": "1999"}, "time"),
        ({"time": "2020-01-01"}, "time"),
        ({"elevation": "HIGH"}, "elevation"),
        ({"time": "2020", "elevation": "medium"}, "elevation"),
    ],
)
def test_kvp_bad_dimension_value(extra: dict[str, str], locator: str) -> None:
    assert ows_error(parse_kvp, CONFIG, {**TIMED, **extra}) == (INVALID, locator, 400)


# --- REST -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "layer", "coord", "dimensions"),
    [
        ("osm/default/epsg3857/17/47790/68240.png", "osm", TileCoord(17, 47790, 68240), ()),
        ("photo/natural/epsg3857/3/7/0.jpeg", "photo", TileCoord(3, 7, 0), ()),
        ("photo/natural/epsg3857/3/7/0.jpg", "photo", TileCoord(3, 7, 0), ()),
        ("swiss/default/epsg2056/250/4/7.png", "swiss", TileCoord(2, 4, 7), ()),
        (
            "timed/default/2020/high/epsg3857/2/1/3.png",
            "timed",
            TileCoord(2, 1, 3),
            ("2020", "high"),
        ),
    ],
)
def test_valid_rest_paths(
    path: str, layer: str, coord: TileCoord, dimensions: tuple[str, ...]
) -> None:
    request = parse_rest(CONFIG, path)
    assert request.layer is CONFIG.layers[layer]
    assert request.coord == coord
    assert request.dimensions == dimensions


@pytest.mark.parametrize(
    "path",
    [
        "",
        "osm",
        "osm/default/epsg3857/17/47790",
        "osm/default/epsg3857/17/68240.png",
        "osm/default/x/epsg3857/17/47790/68240.png",
        "osm/default/epsg3857/17/47790/68240",
        "osm//epsg3857/17/47790/68240.png",
        "osm/default/epsg3857/17/47790/68240.png/",
        "timed/default/epsg3857/2/1/3.png",
        "timed/default/2020/epsg3857/2/1/3.png",
        "timed/default/2020/high/extra/epsg3857/2/1/3.png",
    ],
)
def test_rest_paths_with_the_wrong_shape_are_not_found(path: str) -> None:
    assert ows_error(parse_rest, CONFIG, path) == ("NotFound", None, 404)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("roads/default/epsg3857/17/47790/68240.png", (INVALID, "layer", 400)),
        ("osm/night/epsg3857/17/47790/68240.png", (INVALID, "style", 400)),
        ("osm/default/epsg3857/17/47790/68240.jpeg", (INVALID, "format", 400)),
        ("osm/default/epsg3857/17/47790/68240.PNG", (INVALID, "format", 400)),
        ("osm/default/epsg3857/17/47790/68240.gif", (INVALID, "format", 400)),
        ("osm/default/epsg2056/17/47790/68240.png", (INVALID, "tilematrixset", 400)),
        ("osm/default/epsg3857/22/47790/68240.png", (INVALID, "tilematrix", 400)),
        ("osm/default/epsg3857/17/row/68240.png", (INVALID, "tilerow", 400)),
        ("osm/default/epsg3857/17/47790/col.png", (INVALID, "tilecol", 400)),
        ("osm/default/epsg3857/17/47790/68240.png.png", (INVALID, "tilecol", 400)),
        ("osm/default/epsg3857/17/47804/68240.png", (OUT, "tilerow", 400)),
        ("osm/default/epsg3857/17/47790/68250.png", (OUT, "tilecol", 400)),
        ("osm/default/epsg3857/17/-1/68240.png", (OUT, "tilerow", 400)),
        ("timed/default/1999/high/epsg3857/2/1/3.png", (INVALID, "time", 400)),
        ("timed/default/2020/HIGH/epsg3857/2/1/3.png", (INVALID, "elevation", 400)),
    ],
)
def test_rest_errors(path: str, expected: tuple[str, str, int]) -> None:
    assert ows_error(parse_rest, CONFIG, path) == expected


def test_rest_and_kvp_agree() -> None:
    rest = parse_rest(CONFIG, "timed/default/2020/low/epsg3857/2/1/3.png")
    kv = parse_kvp(CONFIG, {**TIMED, "time": "2020"})
    assert rest == kv
