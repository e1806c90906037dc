"""The pure parts of OGC API - Tiles, TMS, XYZ and TileJSON: tile matrix sets, content
negotiation, MapCache's layer keys and row flip, documents against the OGC's schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from tests.support.configs import MERC, mercator_grid
from tests.support.ogc_json import (
    validate_collection,
    validate_openapi,
    validate_openapi_response,
    validate_tms,
)
from tileserver.config import Config, parse_config
from tileserver.errors import OWSException
from tileserver.grid import Grid
from tileserver.negotiation import negotiate
from tileserver.ogcapi import OgcApi
from tileserver.tilematrixsets import (
    is_web_mercator_quad,
    tile_matrix_set_document,
    tile_matrix_sets,
)
from tileserver.tms import parse_layer_key, tile_map, tile_map_service, tilejson, tms_row

SWISS = {
    "srs": "EPSG:2056",
    "bbox": [2420000, 830000, 2900000, 1350000],
    "resolutions": [4000, 1000, 250, 10, 0.5],
}
LATLON = {"srs": "EPSG:4326", "bbox": [-180, -90, 180, 90], "resolutions": [0.703125, 0.3515625]}


def config(tmp_path: Path, grids: dict[str, Any], layers: dict[str, str]) -> Config:
    mapfile = tmp_path / "style.xml"
    mapfile.write_text("<Map/>")
    bboxes = {
        "EPSG:3857": [824000, 5421800, 829500, 5428000],
        "EPSG:2056": [2596500, 840000, 2601500, 845500],
        "EPSG:4326": [7, 43, 8, 44],
    }
    return parse_config(
        {
            "grids": grids,
            "layers": {
                name: {
                    "type": "mapnik",
                    "mapfile": str(mapfile),
                    "grid": grid,
                    "title": name.upper(),
                    "bbox": bboxes[grids[grid]["srs"]],
                }
                for name, grid in layers.items()
            },
            "metadata": {"title": "T", "abstract": "A <b> & c"},
        },
        tmp_path,
    )


def grids_of(tmp_path: Path, **grids: dict[str, Any]) -> dict[str, Grid]:
    return dict(config(tmp_path, grids, {"x": next(iter(grids))}).grids)


@pytest.mark.parametrize(
    ("grid", "quad"),
    [
        (mercator_grid(21), True),
        (mercator_grid(3), True),  # fewer levels: still the quadtree
        ({**mercator_grid(), "tile_size": 512}, False),
        ({**mercator_grid(), "matrix_identifier": "resolution"}, False),
        (
            {**mercator_grid(), "resolutions": [156543.03392804097 / 2**z for z in range(1, 5)]},
            False,
        ),  # starts at level 1
        ({**mercator_grid(), "bbox": [-MERC, -MERC, MERC, MERC / 2]}, False),
        (SWISS, False),
        (LATLON, False),
    ],
)
def test_web_mercator_quad_is_recognised_exactly(
    tmp_path: Path, grid: dict[str, Any], quad: bool
) -> None:
    assert is_web_mercator_quad(grids_of(tmp_path, g=grid)["g"]) is quad


def test_identifiers_registered_first_then_grid_names(tmp_path: Path) -> None:
    grids = grids_of(tmp_path, merc=mercator_grid(), merc2=mercator_grid(5), swiss=SWISS)
    sets = tile_matrix_sets(grids.values())
    assert list(sets.by_id) == ["WebMercatorQuad", "swiss"]
    assert sets.by_id["WebMercatorQuad"] is grids["merc"]  # the first such grid
    assert sets.ids == {"merc": "WebMercatorQuad", "merc2": "WebMercatorQuad", "swiss": "swiss"}
    # A configured grid named like the registered set keeps the name: the other is custom.
    named = grids_of(tmp_path, WebMercatorQuad=SWISS, merc=mercator_grid())
    sets = tile_matrix_sets(named.values())
    assert sets.ids == {"WebMercatorQuad": "WebMercatorQuad", "merc": "merc"}
    assert sets.well_known("WebMercatorQuad") is None
    document = tile_matrix_set_document(named["WebMercatorQuad"], "WebMercatorQuad")
    assert "uri" not in document and document["crs"].endswith("/EPSG/0/2056")


def test_web_mercator_quad_is_the_registered_definition(tmp_path: Path) -> None:
    document = tile_matrix_set_document(
        grids_of(tmp_path, g=mercator_grid(5))["g"], "WebMercatorQuad"
    )
    validate_tms("tileMatrixSet.json", document)
    assert document["uri"] == "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
    assert document["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    matrices = document["tileMatrices"]
    assert [m["id"] for m in matrices] == [str(z) for z in range(25)]  # all 25, not our 5
    assert matrices[0]["scaleDenominator"] == pytest.approx(559082264.028717, rel=1e-12)
    # The register's values, to its 15 significant digits.
    assert matrices[24]["cellSize"] == pytest.approx(0.0093306919293428, rel=1e-13)
    assert matrices[24]["scaleDenominator"] == pytest.approx(33.3238997476528, rel=1e-13)
    assert matrices[24]["matrixWidth"] == 2**24
    assert all(m["pointOfOrigin"] == [-MERC, MERC] for m in matrices)


def test_custom_sets_and_the_crs_axis_order(tmp_path: Path) -> None:
    grids = grids_of(tmp_path, swiss=SWISS, latlon=LATLON)
    swiss = tile_matrix_set_document(grids["swiss"], "swiss")
    validate_tms("tileMatrixSet.json", swiss)
    assert [(m["id"], m["matrixWidth"], m["matrixHeight"]) for m in swiss["tileMatrices"]] == [
        ("0", 1, 1), ("1", 2, 3), ("2", 8, 9), ("3", 188, 204), ("4", 3750, 4063)]  # fmt: skip
    assert swiss["boundingBox"]["lowerLeft"] == [2420000, 830000]
    latlon = tile_matrix_set_document(grids["latlon"], "latlon")
    # EPSG:4326 lists latitude first: the origin is (90, -180).
    assert latlon["tileMatrices"][0]["pointOfOrigin"] == [90, -180]
    assert latlon["boundingBox"]["upperRight"] == [90, 180]


def test_the_tms_1_0_members_are_a_second_representation(tmp_path: Path) -> None:
    grid = grids_of(tmp_path, swiss=SWISS)["swiss"]
    plain = tile_matrix_set_document(grid, "swiss")
    both = tile_matrix_set_document(grid, "swiss", tms1_members=True)
    validate_tms("tileMatrixSet.json", both)
    assert "identifier" not in plain and "topLeftCorner" not in plain["tileMatrices"][0]
    assert (both["identifier"], both["supportedCRS"]) == ("swiss", plain["crs"])
    for matrix in both["tileMatrices"]:
        assert matrix["identifier"] == matrix["id"]
        assert matrix["topLeftCorner"] == matrix["pointOfOrigin"]


PNG = {"png": "image/png"}
JSON = {"json": "application/json"}


@pytest.mark.parametrize(
    ("f", "accept", "offered", "expected"),
    [
        (None, None, JSON, "application/json"),
        (None, "", JSON, "application/json"),
        ("json", "text/html", JSON, "application/json"),  # f wins
        ("JSON", None, JSON, "application/json"),
        (None, "application/geo+json, application/json", JSON, "application/json"),  # GDAL
        (None, "text/html,application/xhtml+xml,*/*;q=0.8", JSON, "application/json"),
        (None, "image/*", PNG, "image/png"),
        (None, "image/png;q=0.5, image/jpeg", PNG, "image/png"),
        (None, "image/webp,image/*;q=0", PNG, 406),
        (None, "text/html", JSON, 406),
        (None, "application/json;q=0", JSON, 406),
        ("html", None, JSON, 406),
        ("jpeg", None, PNG, 406),
        ("yaml", None, JSON, 400),
        (None, "application/json;q=abc", JSON, "application/json"),
    ],
)
def test_negotiation(
    f: str | None, accept: str | None, offered: dict[str, str], expected: str | int
) -> None:
    if isinstance(expected, int):
        with pytest.raises(OWSException) as caught:
            negotiate(f, accept, offered)
        assert caught.value.status == expected
    else:
        assert negotiate(f, accept, offered) == expected


@pytest.mark.parametrize(
    ("key", "layer", "grid", "dimensions"),
    [
        ("osm", "osm", None, {}),
        ("osm@epsg3857", "osm", "epsg3857", {}),
        ("osm[YEAR=2024]@g", "osm", "g", {"year": "2024"}),
        ("osm[YEAR=2024][Elevation=]", "osm", None, {"year": "2024", "elevation": ""}),
    ],
)
def test_mapcache_layer_keys(
    key: str, layer: str, grid: str | None, dimensions: dict[str, str]
) -> None:
    parsed = parse_layer_key(key)
    assert (parsed.layer, parsed.grid, parsed.dimensions) == (layer, grid, dimensions)


@pytest.mark.parametrize("key", ["osm[YEAR]", "osm[A=1", "@g", "osm]x["])
def test_malformed_layer_keys_are_404(key: str) -> None:
    with pytest.raises(OWSException) as caught:
        parse_layer_key(key)
    assert caught.value.status == 404


@given(z=st.integers(0, 4), y=st.integers(-5, 5000))
def test_the_tms_row_flip_is_its_own_inverse(z: int, y: int) -> None:
    grid = Grid("swiss", "EPSG:2056", parse_bbox(SWISS), tuple(SWISS["resolutions"]))
    height = grid.matrix_size(z)[1]
    assert tms_row(grid, z, tms_row(grid, z, y)) == y
    assert (0 <= tms_row(grid, z, y) < height) == (0 <= y < height)


def parse_bbox(grid: dict[str, Any]) -> Any:
    from tileserver.types import BBox

    return BBox(*grid["bbox"])


def test_documents_validate_and_link_each_other(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"merc": mercator_grid(21), "swiss": SWISS},
                 {"roads": "merc", "lakes": "swiss"})  # fmt: skip
    api = OgcApi.of(cfg, "https://tiles.example.org/")
    assert api.url == "https://tiles.example.org/ogcapi"
    validate_openapi("landingPage", api.landing_page())
    validate_openapi("confClasses", api.conformance())
    assert api.conformance()["conformsTo"][-1].endswith("/conf/png")
    validate_openapi_response("TileMatrixSetsList", api.tile_matrix_sets())
    collections = api.collections()
    validate_openapi("collections", {**collections, "collections": []})
    for layer in cfg.layers.values():
        validate_collection(api.collection(layer))
        validate_openapi_response("TileSetsList", api.tilesets(layer))
        tileset = api.tileset(layer, layer.grid, layer.extension)
        validate_tms("tileSet.json", tileset)
        # Levels where the layer is less than a pixel wide are not listed.
        listed = [lim["tileMatrix"] for lim in tileset["tileMatrixSetLimits"]]
        first = next(z for z, r in enumerate(layer.grid.resolutions) if r <= 5000)
        assert listed == [
            layer.grid.matrix_id(z) for z in range(first, len(layer.grid.resolutions))
        ]
    roads = api.tileset(cfg.layers["roads"], cfg.grids["merc"], "png")
    assert roads["links"][0]["href"] == (
        "https://tiles.example.org/ogcapi/collections/roads/map/tiles/WebMercatorQuad"
    )
    assert any(link["href"].endswith("/xyz/roads/merc/tilejson.json") for link in roads["links"])
    lakes = api.tileset(cfg.layers["lakes"], cfg.grids["swiss"], "png")
    assert not any("tilejson" in link["href"] for link in lakes["links"])
    assert api.tile_matrix_set("nope") is None


def test_tms_documents_and_tilejson(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"merc": mercator_grid(21), "swiss": SWISS},
                 {"roads": "merc", "lakes": "swiss"})  # fmt: skip
    service = etree.fromstring(tile_map_service(cfg, "http://h"))
    assert service.findtext("Abstract") == "A <b> & c"
    assert [m.get("href") for m in service.iterfind("TileMaps/TileMap")] == [
        "http://h/tms/1.0.0/roads@merc", "http://h/tms/1.0.0/lakes@swiss"]  # fmt: skip
    lakes = etree.fromstring(tile_map(cfg.layers["lakes"], cfg.grids["swiss"], "http://h"))
    assert lakes.find("BoundingBox").attrib == {
        "minx": "2596500", "miny": "840000", "maxx": "2601500", "maxy": "845500"}  # fmt: skip
    assert [s.get("units-per-pixel") for s in lakes.iterfind("TileSets/TileSet")] == [
        "4000", "1000", "250", "10", "0.5"]  # fmt: skip
    document = tilejson(cfg.layers["roads"], cfg.grids["merc"], "http://h")
    assert document["tiles"] == ["http://h/xyz/roads/merc/{z}/{x}/{y}.png"]
    assert document["center"][2] == 15  # the bbox (5.5 km) is 4+ tiles wide from there on
    with pytest.raises(OWSException) as caught:
        tilejson(cfg.layers["lakes"], cfg.grids["swiss"], "http://h")
    assert caught.value.status == 404


def test_a_layer_on_several_grids_has_a_tileset_and_a_tile_map_on_each(tmp_path: Path) -> None:
    mapfile = tmp_path / "style.xml"
    mapfile.write_text("<Map/>")
    coarse = {**mercator_grid(), "resolutions": [1000.0, 500.0, 250.0]}
    cfg = parse_config(
        {
            "grids": {"merc": mercator_grid(21), "coarse": coarse},
            "layers": {
                "roads": {
                    "type": "mapnik",
                    "mapfile": str(mapfile),
                    "title": "R",
                    "grids": ["merc", "coarse"],
                    "bbox": [824000, 5421800, 829500, 5428000],
                }
            },
        },
        tmp_path,
    )
    layer = cfg.layers["roads"]
    api = OgcApi.of(cfg, "http://h")
    tilesets = api.tilesets(layer)
    validate_openapi_response("TileSetsList", tilesets)
    ids = [t["links"][0]["href"].rsplit("/", 1)[1] for t in tilesets["tilesets"]]
    assert ids == ["WebMercatorQuad", "coarse"]
    assert [s["id"] for s in api.tile_matrix_sets()["tileMatrixSets"]] == ids
    tileset = api.tileset(layer, cfg.grids["coarse"], "png")
    validate_tms("tileSet.json", tileset)
    assert [lim["tileMatrix"] for lim in tileset["tileMatrixSetLimits"]] == ["0", "1", "2"]
    service = etree.fromstring(tile_map_service(cfg, "http://h"))
    assert [m.get("href") for m in service.iterfind("TileMaps/TileMap")] == [
        "http://h/tms/1.0.0/roads@merc", "http://h/tms/1.0.0/roads@coarse"]  # fmt: skip
