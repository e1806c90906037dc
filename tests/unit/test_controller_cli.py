"""Unit tests of the pure parts of `generate_controller`: the configuration it writes back
(--dump-config), the cost model (--cost), the static Capabilities of a store and the
OpenLayers page laid out for a store; and the configuration keys they read."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from tests.support.configs import MERC, mercator_grid
from tests.support.schemas import validate_capabilities
from tileserver.config import CacheConfig, Config, CostConfig, S3Cost, parse_config
from tileserver.config.dump import config_data
from tileserver.errors import ConfigError
from tileserver.selection import metatiles_in_bbox
from tileserver.services.capabilities import (
    CapabilitiesService,
    store_capabilities,
    store_endpoints,
)
from tileserver.services.cost import (
    Estimate,
    LevelCount,
    estimate,
    format_duration,
    level_count,
    monthly_cost,
)
from tileserver.services.publishing import openlayers_files
from tileserver.types import BBox

MAPFILE = "/work/main/config/styles/osm.xml"
MONACO = [824000, 5421800, 829500, 5428000]
NS = {
    "wmts": "http://www.opengis.net/wmts/1.0",
    "ows": "http://www.opengis.net/ows/1.1",
    "xlink": "http://www.w3.org/1999/xlink",
}


def full() -> dict[str, Any]:
    """A configuration that sets something in every section."""
    return {
        "grids": {
            "merc": mercator_grid(19),
            "lv95": {
                "srs": "EPSG:2056",
                "bbox": [2420000, 1030000, 2900000, 1350000],
                "resolutions": [4000, 1000, 250, 100, 10, 1, 0.5],
                "matrix_identifier": "resolution",
                "tile_size": 512,
            },
        },
        "caches": {
            "local": {
                "type": "filesystem",
                "folder": "/var/tmp/tiles",
                "http_url": "https://tiles.example.org/",
                "wmtscapabilities_file": "/caps/WMTSCapabilities.xml",  # TileCloud-chain's '/'
            },
            "s3": {
                "type": "s3",
                "bucket": "tiles",
                "folder": "prod",
                "region": "eu-west-1",
                "endpoint_url": "http://127.0.0.1:9000",
                "cache_control": "public, max-age=86400",
                "http_urls": ["https://a.example.org/prod", "https://b.example.org/prod/"],
            },
        },
        "memcached": {"servers": ["10.0.0.1:11211", "[::1]:11212"], "prefix": "demo/"},
        "layer_default": {"type": "mapnik", "mapfile": MAPFILE, "meta_size": 4},
        "layers": {
            "roads": {
                "title": "Roads",
                "abstract": "Main roads",
                "grid": "merc",
                "bbox": MONACO,
                "min_resolution_seed": 19.1,
                "expires": 0.5,
                "dimensions": [{"name": "YEAR", "values": [2024, "2025"], "default": "2025"}],
                "empty_tile_detection": {"size": 334, "hash": "ab" * 20},
                "missing_tile": "no_content",
            },
            "rivers": {"grid": "lv95", "meta": False, "extension": "jpeg", "cache": "s3"},
        },
        "generation": {"default_cache": "local", "default_layers": ["roads"], "number_process": 3},
        "server": {"port": 9000, "url": "https://maps.example.org", "render_processes": 2},
        "metadata": {"title": "Maps", "keywords": ["a", "b"]},
        "provider": {
            "name": "Team",
            "contact": {"name": "Ann", "info": {"address": {"city": "Bern", "email": "a@b.c"}}},
        },
        "cost": {"tile_size": 12, "s3": {"put": 0.0054}},
    }


def parse(data: dict[str, Any]) -> Config:
    return parse_config(data, base_dir=Path("/work/main/config"))


def messages_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value.messages


# --- the configuration keys ------------------------------------------------------------------


def test_cache_public_urls_and_capabilities_file() -> None:
    caches = parse(full()).caches
    local, s3 = caches["local"], caches["s3"]
    assert local.public_urls == ("https://tiles.example.org",)
    assert local.wmtscapabilities_file == "caps/WMTSCapabilities.xml"
    assert s3.public_urls == ("https://a.example.org/prod", "https://b.example.org/prod")
    assert s3.wmtscapabilities_file == "1.0.0/WMTSCapabilities.xml"  # the default
    # http_url wins over http_urls, as in TileCloud-chain.
    both = replace(s3, http_url="https://c.example.org")
    assert both.public_urls == ("https://c.example.org",)


def test_cost_section_defaults_and_overrides() -> None:
    assert parse({**full(), "cost": None}).cost == CostConfig()
    cost = parse(full()).cost
    assert cost.tile_size == 12
    assert cost.s3 == S3Cost(put=0.0054)
    assert cost.metatile_generation_time == CostConfig().metatile_generation_time


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("caches.local.http_url", "tiles.example.org", "caches.local.http_url: expected an http"),
        ("caches.s3.http_urls", ["ftp://x"], "caches.s3.http_urls: expected an http"),
        (
            "caches.local.wmtscapabilities_file",
            "../caps.xml",
            "must be a relative path inside the cache, got '../caps.xml'",
        ),
        ("cost.tile_size", -1, "cost.tile_size: must be at least 0, got -1"),
        ("cost.s3.get", "cheap", "cost.s3.get: expected a number, got str 'cheap'"),
        ("cost.s3.egress", 1, "cost.s3.egress: unknown key"),
        # TileCloud-chain's name of requests_per_month, honoured (tests/unit/test_tcc_config.py)
        ("cost.request_per_layers", -1, "cost.request_per_layers: must be at least 0, got -1"),
    ],
)
def test_mistakes_in_the_new_keys_name_their_path(path: str, value: Any, expected: str) -> None:
    data = full()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    assert any(expected in message for message in messages_of(data)), messages_of(data)


# --- --dump-config -----------------------------------------------------------------------------


def test_dumped_configuration_reads_back_into_an_equal_configuration() -> None:
    config = parse(full())
    data = config_data(config)
    assert "layer_default" not in data
    roads = data["layers"]["roads"]
    assert roads["meta_size"] == 4  # merged from layer_default
    assert roads["cache"] == "local"  # from generation.default_cache
    assert roads["output_format"] == "png:z=1"  # a default filled in
    text = yaml.safe_dump(data, sort_keys=False)
    assert parse(yaml.safe_load(text)) == config


def test_dump_of_a_minimal_configuration_reads_back() -> None:
    config = parse(
        {
            "grids": {"merc": mercator_grid(5)},
            "layers": {"l": {"type": "mapnik", "mapfile": MAPFILE, "grid": "merc"}},
        }
    )
    data = config_data(config)
    assert "memcached" not in data
    assert "cache" not in data["layers"]["l"]  # unset stays unset: null is not allowed
    assert parse(yaml.safe_load(yaml.safe_dump(data))) == config


# --- --cost ------------------------------------------------------------------------------------


def layer(**options: Any) -> Any:
    data = {
        "grids": {"merc": mercator_grid(19)},
        "layers": {
            "l": {"type": "mapnik", "mapfile": MAPFILE, "grid": "merc", "bbox": MONACO, **options}
        },
    }
    return parse(data).layers["l"]


ROADS = layer()


def slippy_range(z: int, bbox: list[float]) -> tuple[range, range]:
    """Rows and columns of the Web Mercator tiles that intersect bbox, from the tile span."""
    span = 2 * MERC / 2**z
    cols = range(math.floor((bbox[0] + MERC) / span), math.ceil((bbox[2] + MERC) / span))
    rows = range(math.floor((MERC - bbox[3]) / span), math.ceil((MERC - bbox[1]) / span))
    return rows, cols


@pytest.mark.parametrize("z", range(10, 19))
def test_level_count_is_the_tiles_and_metatiles_over_the_bbox(z: int) -> None:
    roads = layer()
    rows, cols = slippy_range(z, MONACO)
    count = level_count(roads, z)
    assert count.tiles == len(rows) * len(cols)
    metatiles = {(r // 8, c // 8) for r in rows for c in cols}
    assert count.metatiles == len(metatiles)
    assert count.metatiles == len(list(metatiles_in_bbox(roads.grid, z, roads.bbox, 8)))


@given(
    x=st.floats(-MERC, MERC * 0.99),
    y=st.floats(-MERC, MERC * 0.99),
    width=st.floats(0.01, 40),  # in tiles of level z
    height=st.floats(0.01, 40),
    z=st.integers(0, 18),
    meta_size=st.integers(1, 16),
)
def test_level_count_agrees_with_the_metatiles_generate_tiles_renders(
    x: float, y: float, width: float, height: float, z: int, meta_size: int
) -> None:
    span = 2 * MERC / 2**z
    bbox = BBox(x, y, min(x + width * span, MERC), min(y + height * span, MERC))
    roads = replace(ROADS, bbox=bbox, meta_size=meta_size)
    refs = list(metatiles_in_bbox(roads.grid, z, bbox, meta_size))
    assert level_count(roads, z).metatiles == len(refs)
    limits = roads.grid.limits(z, bbox)
    rows, cols = limits.max_row - limits.min_row + 1, limits.max_col - limits.min_col + 1
    assert level_count(roads, z).tiles == rows * cols


def test_estimate_follows_tilecloud_chains_model() -> None:
    cost = CostConfig(
        metatile_generation_time=1000,
        tile_generation_time=100,
        tileonly_generation_time=250,
        tile_size=10,
        s3=S3Cost(put=0.005),
    )
    count = LevelCount(z=15, metatiles=3, tiles=40)
    meta = estimate(layer(), count, cost)
    assert meta == Estimate(metatiles=3, tiles=40, milliseconds=3 * 1000 + 40 * 100,
                            put=40 * 0.005 / 1000, size_kib=400)  # fmt: skip
    single = estimate(layer(meta=False), count, cost)
    assert (single.metatiles, single.milliseconds) == (0, 40 * 250)
    assert meta.add(single).tiles == 80


def test_monthly_cost() -> None:
    cost = CostConfig(tile_size=16, s3=S3Cost(get=0.0004, storage=0.023, download=0.09))
    monthly = monthly_cost(size_kib=2 * 1024 * 1024, requests=1_000_000, cost=cost)
    assert monthly.storage == pytest.approx(2 * 0.023)
    assert monthly.get == pytest.approx(0.4)
    assert monthly.download == pytest.approx(1_000_000 * 16 / 1024**2 * 0.09)
    assert monthly.total == pytest.approx(monthly.storage + monthly.get + monthly.download)


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0:00:00"), (1499, "0:00:01"), (61_000, "0:01:01"), (90_061_000, "1 d 1:01:01")],
)
def test_format_duration(ms: float, text: str) -> None:
    assert format_duration(ms) == text


# --- the static Capabilities of a store --------------------------------------------------------


def test_store_capabilities_point_at_the_store_and_list_its_levels() -> None:
    config = parse(full())
    layers = list(config.layers.values())
    document = store_capabilities(config, layers, config.caches["s3"])
    validate_capabilities(document)
    tree = etree.fromstring(document)
    templates = [r.get("template") for r in tree.iterfind(".//wmts:Layer/wmts:ResourceURL", NS)]
    assert templates == [
        "https://a.example.org/prod/1.0.0/roads/{Style}/{YEAR}/{TileMatrixSet}/{TileMatrix}/"
        "{TileRow}/{TileCol}.png",
        "https://b.example.org/prod/1.0.0/roads/{Style}/{YEAR}/{TileMatrixSet}/{TileMatrix}/"
        "{TileRow}/{TileCol}.png",
        "https://a.example.org/prod/1.0.0/rivers/{Style}/{TileMatrixSet}/{TileMatrix}/"
        "{TileRow}/{TileCol}.jpeg",
        "https://b.example.org/prod/1.0.0/rivers/{Style}/{TileMatrixSet}/{TileMatrix}/"
        "{TileRow}/{TileCol}.jpeg",
    ]
    # A static store has no KVP endpoint.
    assert b"KVP" not in document
    assert b"/wmts?" not in document
    assert b"/wmts/1.0.0" not in document
    hrefs = [e.get(f"{{{NS['xlink']}}}href") for e in tree.iterfind(".//ows:Get", NS)]
    assert hrefs == [
        "https://a.example.org/prod/1.0.0/WMTSCapabilities.xml",
        "https://a.example.org/prod/1.0.0/",
    ]
    metadata_url = tree.find("wmts:ServiceMetadataURL", NS)
    assert metadata_url is not None
    assert metadata_url.get(f"{{{NS['xlink']}}}href") == hrefs[0]
    # roads is pre-generated down to min_resolution_seed 19.1 (level 13, 19.109 m); rivers
    # has no min_resolution_seed: every level (that has valid limits).
    limits: dict[str, list[str]] = {}
    for element in tree.iterfind(".//wmts:Layer", NS):
        name = element.findtext("ows:Identifier", namespaces=NS)
        assert name is not None
        limits[name] = [
            e.text or "" for e in element.iterfind(".//wmts:TileMatrixLimits/wmts:TileMatrix", NS)
        ]
    assert limits["roads"] == [str(z) for z in range(2, 14)]  # levels 0, 1 are in row 0
    assert limits["rivers"] == ["250", "100", "10", "1", "0_5"]  # 1000: a single tile


def test_the_servers_capabilities_keep_kvp_and_the_wmts_path() -> None:
    config = parse(full())
    document = CapabilitiesService(config).document("http://ignored")
    validate_capabilities(document)
    text = document.decode()
    assert 'xlink:href="https://maps.example.org/wmts?"' in text
    assert 'template="https://maps.example.org/wmts/1.0.0/roads/{Style}/{YEAR}/' in text
    assert text.count("<TileMatrixLimits>") > 12  # every level, not only the stored ones


def test_a_layer_without_valid_limits_has_no_tile_matrix_set_limits() -> None:
    # A bbox in the top-left tile of every level: MaxTileRow/MaxTileCol would be 0.
    config = parse(
        {
            "grids": {"merc": mercator_grid(3)},
            "caches": {"c": {"type": "filesystem", "folder": "/t", "http_url": "http://h/t"}},
            "layers": {
                "corner": {
                    "type": "mapnik",
                    "mapfile": MAPFILE,
                    "grid": "merc",
                    "bbox": [-MERC, MERC - 1000, -MERC + 1000, MERC],
                }
            },
        }
    )
    document = store_capabilities(config, list(config.layers.values()), config.caches["c"])
    validate_capabilities(document)
    assert b"TileMatrixSetLimits" not in document


def test_store_endpoints_need_a_public_url() -> None:
    with pytest.raises(ValueError, match="cache 'x' has no http_url"):
        store_endpoints(CacheConfig(name="x", type="filesystem", folder="/t"))


# --- the OpenLayers page -----------------------------------------------------------------------


def test_openlayers_page_reads_the_capabilities_of_the_store_with_relative_urls() -> None:
    files = openlayers_files("caps/WMTSCapabilities.xml")
    assert set(files) == {
        "index.html",
        "openlayers/demo.js",
        "openlayers/demo.css",
        "openlayers/vendor/ol.js",
        "openlayers/vendor/ol.css",
        "openlayers/vendor/proj4.js",
        "openlayers/vendor/LICENSE.ol.md",
        "openlayers/vendor/LICENSE.proj4.md",
    }
    page = files["index.html"][0].decode()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links == [
        "data:,",
        "openlayers/vendor/ol.css",
        "openlayers/demo.css",
        "caps/WMTSCapabilities.xml",
        "openlayers/vendor/proj4.js",
        "openlayers/vendor/ol.js",
        "openlayers/demo.js",
    ]
    assert set(links) - set(files) == {"data:,", "caps/WMTSCapabilities.xml"}
    script = files["openlayers/demo.js"][0].decode()
    assert 'var CAPABILITIES_URL = "caps/WMTSCapabilities.xml";' in script
    assert "wmts/1.0.0" not in script
    assert files["index.html"][1] == "text/html; charset=utf-8"
    assert files["openlayers/vendor/ol.js"][1].startswith("text/javascript")
    # Offline: nothing is fetched from another host.
    assert "http" not in page.replace("http-equiv", "")
