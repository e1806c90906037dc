"""TileCloud-chain's configuration keys: each understood, warned about, or refused naming
the feature (issue 13); and TCC's own files, read unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tcc_configs import TCC_CONFIGS, needs_tcc_configs
from tileserver.config import parse_config
from tileserver.config_loader import load_config
from tileserver.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SWISS = {"srs": "EPSG:21781", "bbox": [420000, 30000, 900000, 350000]}
HALF = 20037508.342789244
MERC = {"srs": "EPSG:3857", "bbox": [-HALF, -HALF, HALF, HALF],
        "resolutions": [156543.03392804097 / 2**z for z in range(19)]}  # fmt: skip


def base(**layer: Any) -> dict[str, Any]:
    return {
        "grids": {
            "swissgrid_5": {**SWISS, "resolutions": [100, 50, 20, 10, 5]},
            "swissgrid_01": {**SWISS, "resolutions": [2.5, 0.5], "matrix_identifier": "resolution"},
        },
        "caches": {"local": {"type": "filesystem", "folder": "/tmp/tiles"}},
        "layers": {
            "point": {"type": "wms", "url": "http://localhost/mapserv", "layers": "point",
                      "grid": "swissgrid_5", **layer},
        },
    }  # fmt: skip


def messages(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, ROOT)
    return info.value.messages


# --- understood and honoured ------------------------------------------------------------------


def test_grids_list_gives_the_layer_several_tile_matrix_sets() -> None:
    layer = parse_config(base(grids=["swissgrid_5", "swissgrid_01"]), ROOT).layers["point"]
    assert layer.grid_names == ("swissgrid_5", "swissgrid_01")
    other = layer.on_grid("swissgrid_01")
    assert other is not None and other.grid.name == "swissgrid_01"
    assert [v.grid.name for v in layer.variants()] == ["swissgrid_5", "swissgrid_01"]
    assert layer.on_grid("nope") is None


def test_the_bbox_is_the_first_grids_and_reprojected_to_the_others() -> None:
    data = base(grids=["swissgrid_5", "lv95"], bbox=[550000, 170000, 560000, 180000])
    data["grids"]["lv95"] = {"srs": "EPSG:2056", "bbox": [2420000, 1030000, 2900000, 1350000],
                             "resolutions": [100, 10]}  # fmt: skip
    layer = parse_config(data, ROOT).layers["point"]
    assert layer.bbox.as_tuple() == (550000, 170000, 560000, 180000)
    lv95 = layer.on_grid("lv95")
    assert lv95 is not None and lv95.grid.srs == "EPSG:2056"
    # LV95 is LV03 shifted by 2,000,000 / 1,000,000 (to the metre, give or take a few).
    assert lv95.bbox.as_tuple() == pytest.approx((2550000, 1170000, 2560000, 1180000), abs=5)
    # Outside a grid once reprojected: refused, naming that grid.
    data["layers"]["point"]["bbox"] = [0, 0, 10, 10]
    assert messages(data) == [
        "layers.point.bbox: [0.0, 0.0, 10.0, 10.0] is outside grid 'swissgrid_5'"
    ]


def test_a_layer_without_grid_nor_grids_is_on_every_grid() -> None:
    data = base()
    del data["layers"]["point"]["grid"]
    layer = parse_config(data, ROOT).layers["point"]
    assert layer.grid_names == ("swissgrid_5", "swissgrid_01")  # TileCloud-chain's rule
    assert [v.bbox for v in layer.variants()] == [g.bbox for g in layer.grids]


def test_a_layer_without_type_is_a_wms_layer_as_in_tcc_1x(tmp_path: Path) -> None:
    """TileCloud-chain 1.x's schema defaults `type` to wms (2.x has no default and fails on
    such a layer); a layer with a `mapfile` cannot be one, and is refused saying so."""
    data = base()
    del data["layers"]["point"]["type"]
    layer = parse_config(data, ROOT).layers["point"]
    assert layer.type == "wms" and layer.wms is not None and layer.wms.layers == "point"
    (tmp_path / "style.xml").write_text("<Map/>")
    data["layers"]["m"] = {"mapfile": "style.xml", "grid": "swissgrid_5"}
    assert messages(data) == [
        "layers.m.type: missing required key: a layer with a `mapfile` is `type: mapnik` "
        "(where type is absent, TileCloud-chain 1.x takes `wms`)"
    ]


def test_a_tcc_empty_tile_hash_of_a_uniform_tile_gives_its_colour() -> None:
    """TileCloud-chain's test hash is a transparent PNG at zlib level 6: tileserver writes
    other bytes (zlib level 1 by default), so the colour is what finds empty tiles."""
    detection = {"size": 334, "hash": "dd6cb45962bccb3ad2450ab07011ef88f766eda8"}
    data = base(empty_tile_detection=detection)
    data["layers"]["line"] = {**data["layers"]["point"], "layers": "line"}
    config = parse_config(data, ROOT)
    empty = config.layers["point"].empty_tile_detection
    assert empty is not None and (empty.size, empty.color) == (334, (0, 0, 0, 0))
    assert empty.identified == "a transparent 256x256 tile, PNG, zlib level 6"
    (warning,) = [w for w in config.warnings if "empty_tile_detection" in w]
    assert warning == (
        "layers.empty_tile_detection: the hash of a transparent 256x256 tile, PNG, zlib level "
        "6: a tile all transparent is empty whatever encoder writes it (as `color: "
        "'transparent'` says) (layers point, line)"
    )


def test_empty_tile_detection_by_colour() -> None:
    layer = parse_config(base(empty_tile_detection={"color": "#aad3df"}), ROOT).layers["point"]
    assert layer.empty_tile_detection is not None
    assert layer.empty_tile_detection.color == (170, 211, 223, 255)
    assert layer.empty_tile_detection.size is None
    assert messages(base(empty_tile_detection={"color": "blue"})) == [
        "layers.point.empty_tile_detection.color: expected 'transparent' or '#rrggbb[aa]', "
        "got 'blue'"
    ]
    assert messages(base(empty_tile_detection={"color": "#ffffff", "hash": "ab" * 20})) == [
        "layers.point.empty_tile_detection.size: missing required key"
    ]


def test_tcc_resolution_identifiers() -> None:
    grid = parse_config(base(), ROOT).grids["swissgrid_01"]
    assert [grid.matrix_id(z) for z in range(2)] == ["2_5", "0_5"]


def test_dimension_generate_px_buffer_data_buffer_and_layer_cost() -> None:
    dimension = {"name": "DATE", "values": ["2010", "2012"], "default": "2012",
                 "generate": ["2010"]}  # fmt: skip
    layer = parse_config(
        base(dimensions=[dimension], px_buffer=100, data_buffer=64,
             cost={"tile_generation_time": 12}),
        ROOT,
    ).layers["point"]  # fmt: skip
    assert layer.dimensions[0].generated == ("2010",)
    assert (layer.px_buffer, layer.data_buffer) == (100, 64)
    assert layer.cost is not None and layer.cost.tile_generation_time == 12
    wrong = {**dimension, "generate": ["1999"]}
    assert messages(base(dimensions=[wrong])) == [
        "layers.point.dimensions[0].generate: '1999' is not one of the values ['2010', '2012']"
    ]


def test_generation_keys_and_default_layers_absent_means_every_layer() -> None:
    data = base()
    data["layers"]["line"] = {**data["layers"]["point"], "layers": "line"}
    data["generation"] = {"error_file": "error.list", "maxconsecutive_errors": 2}
    config = parse_config(data, ROOT)
    assert config.generation.default_layers == ("point", "line")
    assert (config.generation.error_file, config.generation.maxconsecutive_errors) == (
        "error.list",
        2,
    )


def test_hosts_placeholders_give_one_url_per_host() -> None:
    data = base()
    data["caches"] = {
        "multi": {"type": "filesystem", "folder": "/tmp", "http_url": "http://%(host)s/tiles/",
                  "hosts": ["wmts1", "wmts2"]},
        "s3": {"type": "s3", "http_url": "https://%(host)s/%(bucket)s/%(folder)s/",
               "host": "s3-eu-west-1.amazonaws.com", "bucket": "tiles", "folder": "t"},
    }  # fmt: skip
    caches = parse_config(data, ROOT).caches
    assert caches["multi"].public_urls == ("http://wmts1/tiles", "http://wmts2/tiles")
    assert caches["s3"].public_urls == ("https://s3-eu-west-1.amazonaws.com/tiles/t",)
    assert caches["s3"].endpoint_url == "https://s3-eu-west-1.amazonaws.com"


def test_mbtiles_cache_is_ours_with_its_keys() -> None:
    """TileCloud-chain's `mbtiles` cache (type, folder, http_url, hosts, http_urls,
    wmtscapabilities_file in its schema) is tileserver's: a file per layer under `folder`,
    named as TileCloud-chain names them."""
    data = base(grid="merc", cache="mbtiles")
    data["grids"]["merc"] = MERC
    data["caches"]["mbtiles"] = {"type": "mbtiles", "folder": "/tmp/tiles/mbtiles",
                                 "http_url": "http://%(host)s/tiles/", "hosts": ["wmts1", "wmts2"],
                                 "wmtscapabilities_file": "/1.0.0/caps.xml"}  # fmt: skip
    config = parse_config(data, ROOT)
    cache = config.caches["mbtiles"]
    assert (cache.type, cache.folder, cache.file) == ("mbtiles", "/tmp/tiles/mbtiles", "")
    assert cache.public_urls == ("http://wmts1/tiles", "http://wmts2/tiles")
    assert cache.wmtscapabilities_file == "1.0.0/caps.xml"
    assert config.layers["point"].cache == "mbtiles"
    assert not [w for w in config.warnings if "mbtiles" in w]


def test_mbtiles_cache_on_a_swiss_grid_is_refused_naming_geopackage() -> None:
    """TileCloud-chain wrote MBTiles files on any grid; MBTiles (and GDAL, QGIS) know
    Web Mercator only."""
    data = base(cache="mbtiles")
    data["caches"]["mbtiles"] = {"type": "mbtiles", "folder": "/tmp/tiles/mbtiles"}
    (message,) = messages(data)
    assert message.startswith("layers.point.cache: cache 'mbtiles' is mbtiles, which holds "
                              "Web Mercator tiles only")  # fmt: skip
    assert message.endswith("grid 'swissgrid_5' is not: use a geopackage cache")


def test_cost_request_per_layers_and_mapcache_memcached() -> None:
    data = base()
    data["cost"] = {"request_per_layers": 1000}
    data["mapcache"] = {"memcache_host": "127.0.0.1", "memcache_port": 11212}
    config = parse_config(data, ROOT)
    assert config.cost.requests_per_month == 1000
    assert config.memcached is not None and config.memcached.servers == (("127.0.0.1", 11212),)


def test_defaults_section_is_read_through_anchors_and_named_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "grids:\n  g: {srs: 'EPSG:21781', bbox: [420000, 30000, 900000, 350000], "
        "resolutions: [10]}\n"
        "defaults:\n  layer: &layer\n    type: wms\n    grid: g\n    meta_size: 0\n"
        "    url: http://localhost/\n"
        "layers:\n  a:\n    <<: *layer\n    layers: a\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.messages == [
        "layers.a.meta_size: must be at least 1, got 0 (set in defaults)"
    ]


def test_the_environment_names_the_memcached_servers(tmp_path: Path) -> None:
    """TILESERVER_MEMCACHED_SERVERS replaces `memcached.servers`, or MapCache's
    `memcache_host` (a container's Memcached, without an edit to the file)."""
    data = base()
    data["mapcache"] = {"memcache_host": "localhost", "memcache_port": 11211}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path, {}).memcached.servers == (("localhost", 11211),)  # type: ignore[union-attr]
    config = load_config(path, {"TILESERVER_MEMCACHED_SERVERS": "cache1:11311, [::1]:11312"})
    assert config.memcached is not None
    assert config.memcached.servers == (("cache1", 11311), ("::1", 11312))
    with pytest.raises(ConfigError) as info:
        load_config(path, {"TILESERVER_MEMCACHED_SERVERS": "cache1"})
    assert info.value.messages == [
        "TILESERVER_MEMCACHED_SERVERS (environment): expected 'host:port', got 'cache1'"
    ]


# --- accepted with one warning ---------------------------------------------------------------


def test_keys_without_effect_get_one_warning_each() -> None:
    data = base(wms_url="http://x/", post_process="optipng")
    data["layers"]["line"] = {**data["layers"]["point"], "layers": "line"}
    data.update(apache={"location": "/tiles"}, process={}, openlayers={"srs": "EPSG:21781"})
    data["generation"] = {"authorised_user": "www-data"}
    warnings = parse_config(data, ROOT).warnings
    for key in ("layers.wms_url", "layers.post_process", "apache", "process", "openlayers",
                "generation.authorised_user"):  # fmt: skip
        found = [w for w in warnings if w.startswith(f"{key}:")]
        assert len(found) == 1 and "no effect" in found[0], (key, warnings)


def test_a_wms_key_an_anchor_brings_into_a_mapnik_layer_is_ignored_with_a_warning(
    tmp_path: Path,
) -> None:
    (tmp_path / "style.xml").write_text("<Map/>")
    data = base()
    data["layers"]["m"] = {"type": "mapnik", "mapfile": "style.xml", "grid": "swissgrid_5"}
    data["layer_default"] = {"url": "http://localhost/"}
    config = parse_config(data, tmp_path)
    assert any(w.startswith("layers.m.url: ignored") for w in config.warnings)


# --- refused, naming the feature ---------------------------------------------------------------


def test_a_tcc_cache_type_is_refused_where_a_layer_uses_it() -> None:
    data = base(cache="db")
    data["caches"]["db"] = {"type": "bsddb", "folder": "/tmp"}
    assert messages(data) == [
        "caches.db.type: 'bsddb' is a TileCloud-chain cache type tileserver does not offer "
        "(supported: filesystem, s3, mbtiles, geopackage, pmtiles); used by layer 'point'"
    ]
    del data["layers"]["point"]["cache"]
    warnings = parse_config(data, ROOT).warnings
    assert any(w.startswith("caches.db.type: 'bsddb' is a TileCloud-chain") for w in warnings)


def test_utfgrid_layers_are_left_out_and_refused_where_asked_for() -> None:
    data = base()
    utfgrid = {"extension": "json", "output_format": "grid", "mime_type": "application/utfgrid"}
    data["layers"]["grid"] = {**data["layers"]["point"], **utfgrid}
    config = parse_config(data, ROOT)
    assert "grid" not in config.layers
    assert any(w.startswith("layers.grid: UTFGrid") for w in config.warnings)
    data["generation"] = {"default_layers": ["grid"]}
    assert messages(data)[0].startswith("generation.default_layers[0]: layer 'grid' is left out")


# --- silent wrong output impossible ------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        ({"extension": "jpeg", "output_format": "png"}, "layers.point.output_format: 'png' "
         "encodes PNG tiles but the layer's extension is 'jpeg' (image/jpeg)"),
        ({"extension": "png", "output_format": "jpeg85"}, "layers.point.output_format: "
         "'jpeg85' encodes JPEG tiles but the layer's extension is 'png' (image/png)"),
        ({"extension": "jpeg", "mime_type": "image/png"},
         "layers.point.mime_type: 'image/png' does not match extension 'jpeg'"),
    ],
)  # fmt: skip
def test_contradicting_formats_are_refused(layer: dict[str, Any], expected: str) -> None:
    (message,) = messages(base(**layer))
    assert message.startswith(expected)


def test_a_png_output_format_from_layer_default_on_a_jpeg_layer_says_where_it_was_set() -> None:
    data = base(extension="jpeg")
    data["layer_default"] = {"output_format": "png"}
    (message,) = messages(data)
    assert message.startswith("layers.point.output_format: 'png' encodes PNG tiles")
    assert message.endswith("(set in layer_default)")


# --- TCC's wrong_*.yaml mistakes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("resolutions", [5, 10], "grids.swissgrid_5.resolutions: resolutions must be sorted "
         "from the largest to the smallest"),
        ("srs", "EPSG:99999", "grids.swissgrid_5.srs: unknown CRS 'EPSG:99999'"),
        ("tile_size", "256", "grids.swissgrid_5.tile_size: expected an integer, got str '256'"),
        ("bbox", "420000 30000", "grids.swissgrid_5.bbox: expected a non-empty list of numbers"),
    ],
)  # fmt: skip
def test_tcc_wrong_grids_are_refused(path: str, value: Any, expected: str) -> None:
    data = base()
    data["grids"]["swissgrid_5"][path] = value
    assert any(m.startswith(expected) for m in messages(data)), messages(data)


# --- TileCloud-chain's own files, unchanged ----------------------------------------------------


@needs_tcc_configs
@pytest.mark.parametrize(
    "name",
    ["scaffold-config.yaml", "test-1.9.4.yaml", "test-master.yaml", "test-multidim-master.yaml"],
)
def test_tcc_files_load_unchanged(name: str, tmp_path: Path) -> None:
    """Copied beside the fixture they name (mapfile/test.mapnik: the demo style, with its
    data), byte for byte."""
    shutil.copy(TCC_CONFIGS / name, tmp_path / name)
    (tmp_path / "mapfile").mkdir()
    shutil.copy(ROOT / "config" / "styles" / "osm.xml", tmp_path / "mapfile" / "test.mapnik")
    (tmp_path / "data").symlink_to(ROOT / "config" / "data")
    config = load_config(tmp_path / name)
    assert config.layers
    assert all(layer.grid.name in config.grids for layer in config.layers.values())
    if name.startswith("test-") and name != "test-multidim-master.yaml":
        assert config.layers["polygon2"].grid.matrix_id(0) == "1"
        assert config.grids["swissgrid_2_5"].matrix_id(0) == "2_5"
        assert set(config.generation.default_layers) == {"line", "polygon"}
        assert config.layers["point"].dimensions[0].generated == ("2012",)
        assert config.layers["point_px_buffer"].px_buffer == 100
        assert config.cost.requests_per_month == 10_000_000
        assert [c for c in config.caches] == ["local", "multi_host", "multi_url", "mbtiles", "s3"]
        mbtiles = config.caches["mbtiles"]
        assert (mbtiles.type, mbtiles.folder) == ("mbtiles", "/tmp/tiles/mbtiles")
        assert not [w for w in config.warnings if w.startswith("caches.mbtiles")]
        assert config.caches["multi_host"].public_urls == tuple(
            f"http://wmts{i}{'/tiles' if '1.9' in name else ''}" for i in (1, 2, 3)
        )
    if name == "scaffold-config.yaml":
        assert config.memcached is not None and config.memcached.servers == (("localhost", 11211),)
        assert config.layers["ortho"].mime_type == "image/jpeg"


def test_a_layers_own_cost_figures_replace_the_top_level_ones() -> None:
    data = base(cost={"tile_generation_time": 12, "tile_size": 7})
    data["cost"] = {"tile_generation_time": 40, "metatile_generation_time": 90}
    config = parse_config(data, ROOT)
    figures = config.cost.for_layer(config.layers["point"])
    assert (figures.tile_generation_time, figures.tile_size) == (12, 7)  # the layer's
    assert figures.metatile_generation_time == 90  # the top level's, where it says none
    data["layers"]["point"].pop("cost")
    plain = parse_config(data, ROOT)
    assert plain.cost.for_layer(plain.layers["point"]) is plain.cost
