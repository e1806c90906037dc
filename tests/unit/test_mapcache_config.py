"""Unit tests of tileserver.services.mapcache_config (the mapcache.xml that
`generate_controller --generate-mapcache-config` writes) and of the atomic write."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.support.configs import MERC, mercator_grid
from tileserver.cli.atomic_file import write_atomically
from tileserver.config import Config, parse_config
from tileserver.errors import ConfigError
from tileserver.services.mapcache_config import has_mapcache_source, mapcache_config

MONACO = [824000, 5421800, 829500, 5428000]
LV95 = {
    "srs": "EPSG:2056",
    "bbox": [2420000, 1030000, 2900000, 1350000],
    "resolutions": [4000, 1000, 250.5, 10],
    "tile_size": 512,
    "matrix_identifier": "resolution",
}
WGS84 = {"srs": "EPSG:4326", "bbox": [-180, -90, 180, 90], "resolutions": [0.703125, 0.3515625]}


def wms(**options: Any) -> dict[str, Any]:
    return {"type": "wms", "url": "http://wms.example.org/wms", "layers": "roads", **options}


def build(tmp_path: Path, layers: dict[str, Any], **top: Any) -> Config:
    """A configuration with grids merc, lv95 and wgs84, two memcached servers, and layers
    (a mapnik layer needs only `type: mapnik`: its style is written to tmp_path)."""
    style = tmp_path / "style.xml"
    style.write_text("<Map/>")
    data: dict[str, Any] = {
        "grids": {"merc": mercator_grid(19), "lv95": LV95, "wgs84": WGS84},
        "memcached": {"servers": ["10.0.0.1:11211", "[::1]:11212"]},
        "layer_default": {"grid": "merc", "mapfile": str(style)},
        "layers": layers,
        **top,
    }
    if data["memcached"] is None:
        del data["memcached"]
    return parse_config(data, tmp_path)


def document(config: Config) -> Any:
    """The parsed mapcache.xml (lxml: a strict parser, unlike MapCache's ezxml)."""
    return etree.fromstring(mapcache_config(config).encode())


def tileset(root: Any, name: str) -> Any:
    found = root.find(f"tileset[@name='{name}']")
    assert found is not None, name
    return found


def comments(root: Any) -> list[str]:
    return [str(c.text).strip() for c in root.iter(etree.Comment)]


# --- grids -----------------------------------------------------------------------------------


def test_grids_carry_srs_extent_resolutions_size_units_and_a_top_left_origin(
    tmp_path: Path,
) -> None:
    config = build(
        tmp_path,
        {"roads": wms(bbox=MONACO), "rivers": wms(grid="lv95"), "world": wms(grid="wgs84")},
    )
    root = document(config)
    grids = {g.get("name"): g for g in root.iterfind("grid")}
    assert list(grids) == ["merc", "lv95", "wgs84"]  # in the order the layers use them
    merc = grids["merc"]
    assert merc.findtext("srs") == "EPSG:3857"
    assert merc.findtext("units") == "m"
    assert merc.findtext("size") == "256 256"
    assert [float(v) for v in merc.findtext("extent").split()] == [-MERC, -MERC, MERC, MERC]
    resolutions = [float(v) for v in merc.findtext("resolutions").split()]
    assert resolutions == list(config.grids["merc"].resolutions)  # every digit kept
    assert merc.findtext("origin") == "top-left"
    lv95 = grids["lv95"]
    assert lv95.findtext("extent") == "2420000 1030000 2900000 1350000"
    assert lv95.findtext("resolutions") == "4000 1000 250.5 10"
    assert lv95.findtext("size") == "512 512"
    assert (grids["wgs84"].findtext("units"), grids["wgs84"].findtext("extent")) == (
        "dd",
        "-180 -90 180 90",
    )
    # MapCache names TileMatrix by zoom level: said where tileserver names them otherwise.
    assert any(
        "grid lv95: MapCache names its TileMatrix by zoom level" in c for c in comments(root)
    )

    # Each tileset references its layer's grid; the bbox restricts it where it is smaller.
    roads = tileset(root, "roads").find("grid")
    assert roads.text == "merc"
    assert [float(v) for v in roads.get("restricted_extent").split()] == MONACO
    assert roads.get("tolerance") == "0"
    rivers = tileset(root, "rivers").find("grid")
    assert (rivers.text, rivers.get("restricted_extent")) == ("lv95", None)


def test_a_layer_on_several_grids_has_a_grid_element_each(tmp_path: Path) -> None:
    bern = [820000, 5925000, 835000, 5940000]  # EPSG:3857, the first grid's CRS
    root = document(build(tmp_path, {"roads": wms(grids=["merc", "lv95"], bbox=bern)}))
    assert [g.get("name") for g in root.iterfind("grid")] == ["merc", "lv95"]
    merc, lv95 = tileset(root, "roads").findall("grid")
    assert (merc.text, lv95.text) == ("merc", "lv95")
    assert [float(v) for v in merc.get("restricted_extent").split()] == bern
    # The bbox reprojected to LV95 (Bern is about 2600000, 1200000 there).
    minx, miny, maxx, maxy = (float(v) for v in lv95.get("restricted_extent").split())
    assert 2590000 < minx < 2600000 < maxx < 2610000
    assert 1190000 < miny < 1200000 < maxy < 1210000


def test_a_grid_named_as_one_of_mapcaches_own_is_renamed(tmp_path: Path) -> None:
    style = tmp_path / "style.xml"
    style.write_text("<Map/>")
    config = parse_config(
        {
            "grids": {"g": mercator_grid(3), "GoogleMapsCompatible": mercator_grid(4)},
            "memcached": {"servers": ["127.0.0.1:11211"]},
            "layers": {"a": wms(grid="g"), "b": wms(grid="GoogleMapsCompatible")},
        },
        tmp_path,
    )
    root = document(config)
    assert [g.get("name") for g in root.iterfind("grid")] == [
        "tileserver_g",
        "tileserver_GoogleMapsCompatible",
    ]
    assert tileset(root, "a").findtext("grid") == "tileserver_g"
    assert tileset(root, "b").findtext("grid") == "tileserver_GoogleMapsCompatible"
    assert "grid g is named tileserver_g here: MapCache defines a grid g of its own." in comments(
        root
    )


# --- tilesets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "metatile", "metabuffer"),
    [
        ({}, "8 8", "32"),  # the defaults
        ({"meta_size": 4, "meta_buffer": 0}, "4 4", "0"),
        ({"meta": False, "meta_size": 4, "meta_buffer": 16}, "1 1", "16"),
    ],
)
def test_metatile_and_metabuffer(
    tmp_path: Path, options: dict[str, Any], metatile: str, metabuffer: str
) -> None:
    root = document(build(tmp_path, {"roads": wms(**options)}))
    assert tileset(root, "roads").findtext("metatile") == metatile
    assert tileset(root, "roads").findtext("metabuffer") == metabuffer


def test_expires_and_auto_expire_follow_each_layers_expires(tmp_path: Path) -> None:
    config = build(
        tmp_path,
        {
            "fast": wms(expires=0.5),
            "slow": wms(expires=6),
            "default": wms(),
            "year": wms(expires=8760),
        },
    )
    root = document(config)
    expiry = {
        name: (tileset(root, name).findtext("expires"), tileset(root, name).findtext("auto_expire"))
        for name in ("fast", "slow", "default", "year")
    }
    assert expiry == {
        "fast": ("1800", "1800"),
        "slow": ("21600", "21600"),
        "default": ("14400", "14400"),  # 4 hours
        # memcached reads more than 30 days as a Unix time: the TTL stops there.
        "year": ("31536000", "2592000"),
    }
    assert any("layer year: auto_expire lowered to 30 days" in c for c in comments(root))


@pytest.mark.parametrize(
    ("options", "format_name", "quality"),
    [
        ({}, "PNG", None),
        ({"output_format": "png8"}, "PNG8", None),
        ({"extension": "jpeg", "mime_type": "image/jpeg"}, "JPEG85", "85"),
        (
            {"extension": "jpeg", "mime_type": "image/jpeg", "output_format": "jpeg70"},
            "JPEG70",
            "70",
        ),
    ],
)
def test_format(
    tmp_path: Path, options: dict[str, Any], format_name: str, quality: str | None
) -> None:
    root = document(build(tmp_path, {"roads": wms(**options)}))
    assert tileset(root, "roads").findtext("format") == format_name
    defined = root.find(f"format[@name='{format_name}']")
    if quality is None:  # one of MapCache's own formats
        assert defined is None
    else:
        assert defined.get("type") == "JPEG"
        assert defined.findtext("quality") == quality


def test_title_abstract_wgs84_bbox_and_dimensions(tmp_path: Path) -> None:
    dimensions = [{"name": "YEAR", "values": [2024, "2025"], "default": "2025"}]
    root = document(
        build(
            tmp_path,
            {
                "roads": wms(
                    title="Roads", abstract="Main roads", bbox=MONACO, dimensions=dimensions
                )
            },
        )
    )
    roads = tileset(root, "roads")
    assert roads.findtext("metadata/title") == "Roads"
    assert roads.findtext("metadata/abstract") == "Main roads"
    west, south, east, north = (
        float(v) for v in roads.findtext("metadata/wgs84boundingbox").split()
    )
    assert (west, south, east, north) == pytest.approx((7.4021, 43.7173, 7.4515, 43.7576), abs=1e-4)
    assert (roads.findtext("source"), roads.findtext("cache")) == ("roads", "memcached")
    (dimension,) = roads.iterfind("dimensions/dimension")
    assert dict(dimension.attrib) == {"type": "values", "name": "YEAR", "default": "2025"}
    assert [v.text for v in dimension.iterfind("value")] == ["2024", "2025"]
    assert root.find("tileset[@name='roads']/dimensions") is not None


# --- the cache and the sources -----------------------------------------------------------------


def test_memcache_cache_has_the_configured_servers(tmp_path: Path) -> None:
    root = document(build(tmp_path, {"roads": wms()}))
    (cache,) = root.iterfind("cache")
    assert (cache.get("name"), cache.get("type")) == ("memcached", "memcache")
    servers = [(s.findtext("host"), s.findtext("port")) for s in cache.iterfind("server")]
    assert servers == [("10.0.0.1", "11211"), ("::1", "11212")]
    services = {s.get("type"): s.get("enabled") for s in root.iterfind("service")}
    assert services == {"wmts": "true", "demo": "true"}


def test_wms_source_has_the_getmap_params_http_and_getfeatureinfo(tmp_path: Path) -> None:
    layer = wms(
        layers="roads,paths",
        extension="jpeg",
        mime_type="image/jpeg",
        params={"TRANSPARENT": "true", "STYLES": "night", "map": "/srv/roads.map"},
        headers={"Referer": "https://tiles.example.org/", "X-Api-Key": "secret"},
        timeout=12.5,
        retries=3,
        query_layers="roads",
        info_formats=["text/html", "application/json"],
    )
    root = document(build(tmp_path, {"roads": layer}, upstream={"retry_backoff": 0.25}))
    source = root.find("source[@name='roads']")
    assert source.get("type") == "wms"
    params = [(p.tag, p.text or "") for p in source.find("getmap/params")]
    assert params == [
        ("LAYERS", "roads,paths"),
        ("FORMAT", "image/jpeg"),  # the layer's
        ("STYLES", "night"),  # the layer's params, sorted by name
        ("TRANSPARENT", "true"),
        ("map", "/srv/roads.map"),
    ]
    assert source.findtext("getfeatureinfo/info_formats") == "text/html,application/json"
    assert source.findtext("getfeatureinfo/params/QUERY_LAYERS") == "roads"
    assert source.findtext("http/url") == "http://wms.example.org/wms"
    headers = [(h.tag, h.text) for h in source.find("http/headers")]
    assert headers == [("Referer", "https://tiles.example.org/"), ("X-Api-Key", "secret")]
    # MapCache takes whole seconds.
    assert (source.findtext("http/connection_timeout"), source.findtext("http/timeout")) == (
        "13",
        "13",
    )
    assert (source.findtext("retries"), source.findtext("retry_delay")) == ("3", "0.25")


def test_a_source_without_query_layers_has_no_getfeatureinfo(tmp_path: Path) -> None:
    root = document(build(tmp_path, {"roads": wms()}))
    source = root.find("source[@name='roads']")
    assert source.find("getfeatureinfo") is None
    assert source.find("http/headers") is None
    assert [(p.tag, p.text) for p in source.find("getmap/params")] == [
        ("LAYERS", "roads"),
        ("FORMAT", "image/png"),
    ]


def test_what_mapcache_cannot_do_is_said_in_comments(tmp_path: Path) -> None:
    layer = wms(version="1.3.0", generate_salt=True, retries=12, wmts_style="night")
    root = document(build(tmp_path, {"roads": layer}))
    notes = comments(root)
    assert "layer roads: MapCache asks WMS 1.3.0 layers in version 1.1.1 (SRS, X/Y), the only " \
           "version its WMS source speaks." in notes  # fmt: skip
    assert "layer roads: MapCache cannot add generate_salt's random SALT parameter." in notes
    assert "layer roads: retries 12 lowered to MapCache's maximum, 10." in notes
    assert "layer roads: MapCache names every WMTS style 'default', not night." in notes
    assert root.findtext("source/retries") == "10"
    assert root.find("source/getmap/params/VERSION") is None  # MapCache's 1.1.1


def test_mapnik_layers_are_left_out_with_a_comment(tmp_path: Path) -> None:
    config = build(tmp_path, {"osm": {"type": "mapnik"}, "roads": wms(grid="lv95")})
    assert [has_mapcache_source(layer) for layer in config.layers.values()] == [False, True]
    root = document(config)
    assert [t.get("name") for t in root.iterfind("tileset")] == ["roads"]
    assert [s.get("name") for s in root.iterfind("source")] == ["roads"]
    (note,) = [c for c in comments(root) if c.startswith("layer osm ")]
    assert note.startswith("layer osm (type: mapnik) is left out: MapCache cannot render Mapnik")
    # The grids of the chosen layers are all there, for a WMS put in front of Mapnik later.
    assert [g.get("name") for g in root.iterfind("grid")] == ["merc", "lv95"]
    # Only the layers asked for.
    only = etree.fromstring(mapcache_config(config, [config.layers["roads"]]).encode())
    assert not [c for c in comments(only) if c.startswith("layer osm ")]
    assert [g.get("name") for g in only.iterfind("grid")] == ["lv95"]


# --- escaping ----------------------------------------------------------------------------------


def test_special_characters_are_escaped_and_read_back_unchanged(tmp_path: Path) -> None:
    url = "http://wms.example.org/cgi-bin/mapserv?map=/srv/a&b.map&lang=fr&x=<1>"
    cql = "name = 'A&B' AND kind <> \"x\" -- ]]> &amp;"
    layer = wms(
        url=url,
        layers="roads&paths",
        params={"CQL_FILTER": cql},
        headers={"Authorization": 'Basic "a&b<c>"'},
        title="Roads & <Paths> \"quoted\" 'single'",
    )
    # A name with '--' ends up in comments, where '--' cannot appear.
    config = build(tmp_path, {"roads": layer, "a--b": {"type": "mapnik"}})
    text = mapcache_config(config)
    assert "&amp;b.map&amp;lang=fr&amp;x=&lt;1&gt;" in text
    root = etree.fromstring(text.encode())  # well-formed
    source = root.find("source[@name='roads']")
    assert source.findtext("http/url") == url
    assert source.findtext("getmap/params/LAYERS") == "roads&paths"
    assert source.findtext("getmap/params/CQL_FILTER") == cql
    assert source.findtext("http/headers/Authorization") == 'Basic "a&b<c>"'
    roads = tileset(root, "roads")
    assert roads.findtext("metadata/title") == "Roads & <Paths> \"quoted\" 'single'"
    assert any(c.startswith("layer a- -b (type: mapnik)") for c in comments(root))


def test_values_xml_cannot_hold_are_refused_with_their_path(tmp_path: Path) -> None:
    layer = wms(params={"BAD NAME": "1", "OK": "bell\x07"}, headers={"X:Y": "1"})
    with pytest.raises(ConfigError) as info:
        mapcache_config(build(tmp_path, {"roads": layer}))
    assert info.value.messages == [
        "layers.roads.params.BAD NAME: MapCache takes the name from an XML element name, "
        "which cannot be this one (letters, digits, '_', '-' and '.' only)",
        "layers.roads.params.OK: 'bell\\x07' has characters an XML file cannot hold",
        "layers.roads.headers.X:Y: MapCache takes the name from an XML element name, which "
        "cannot be this one (letters, digits, '_', '-' and '.' only)",
    ]


# --- what it needs -----------------------------------------------------------------------------


def test_without_a_memcached_section_the_error_names_it(tmp_path: Path) -> None:
    config = build(tmp_path, {"roads": wms()}, memcached=None)
    assert config.memcached is None
    with pytest.raises(ConfigError) as info:
        mapcache_config(config)
    assert info.value.messages == [
        "memcached: missing section: the MapCache configuration's memcache cache takes its "
        "servers from memcached.servers"
    ]


def test_without_a_wms_layer_there_is_nothing_for_mapcache(tmp_path: Path) -> None:
    config = build(tmp_path, {"osm": {"type": "mapnik"}, "osm2": {"type": "mapnik"}})
    with pytest.raises(ConfigError) as info:
        mapcache_config(config)
    assert info.value.messages == [
        "layers: no layer of type wms (layers: osm, osm2): MapCache has no source for Mapnik "
        "layers, only type: wms layers become MapCache tilesets"
    ]


# --- the atomic write --------------------------------------------------------------------------


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "mapcache.xml"
    target.write_text("old")
    umask = os.umask(0o022)
    try:
        write_atomically(target, b"<mapcache/>")
    finally:
        os.umask(umask)
    assert target.read_bytes() == b"<mapcache/>"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable by the web server
    assert [p.name for p in tmp_path.iterdir()] == ["mapcache.xml"]


def test_write_atomically_into_a_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomically(tmp_path / "missing" / "mapcache.xml", b"<mapcache/>")
    assert list(tmp_path.iterdir()) == []
