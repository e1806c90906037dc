# ruff: noqa: E501  (the frozen messages are kept whole, one a line)
"""Golden messages of the configuration's validation.

Each case breaks a valid configuration in one way (or a few) and names the messages
`check-config` printed for it when this table was frozen, before the configuration was
rebuilt on one typed description (issue 13). A message may gain company (check-config now
reports every stage at once), but none of these may disappear or change: the table is how
"no message gets worse" is checked.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tileserver.config import parse_config
from tileserver.errors import ConfigError

HALF = 20037508.342789244


def _merc(levels: int) -> dict[str, Any]:
    return {
        "srs": "EPSG:3857",
        "bbox": [-HALF, -HALF, HALF, HALF],
        "resolutions": [156543.03392804097 / 2**z for z in range(levels)],
    }


BASE: dict[str, Any] = {
    "grids": {"a": _merc(19), "b": _merc(10)},
    "caches": {
        "fs": {"type": "filesystem", "folder": "/var/tmp/tiles"},
        "bucket": {"type": "s3", "bucket": "tiles"},
    },
    "layer_default": {"meta_size": 4, "expires": 2, "grid": "a"},
    "layers": {
        "roads": {"type": "mapnik", "mapfile": "style.xml", "cache": "fs"},
        "ortho": {"type": "wms", "url": "https://wms.example.org/wms", "layers": "ortho",
                  "extension": "jpeg"},
    },
    "generation": {"default_cache": "fs", "default_layers": ["roads"]},
    "memcached": {"servers": ["127.0.0.1:11211"]},
}  # fmt: skip

DELETE = object()


def _apply(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


# case id -> {dotted path: value (DELETE removes the key)}
CASES: dict[str, dict[str, Any]] = {
    "unknown_top_level_key": {"layer_defaults": {"meta": True}},
    "unknown_layer_key_did_you_mean": {"layers.roads.meta_sise": 4},
    "unknown_key_in_layer_default": {"layer_default.meta_sise": 4},
    "unknown_grid": {"layers.roads.grid": "x"},
    "unknown_grid_in_layer_default": {"layer_default.grid": "x"},
    "unknown_cache": {"layers.roads.cache": "nope"},
    "unknown_default_cache": {"generation.default_cache": "nope"},
    "unknown_default_layer": {"generation.default_layers": ["roads", "rivers"]},
    "unknown_layer_type": {"layers.roads.type": "wmts"},
    "missing_layer_type": {"layers.roads.type": DELETE},
    "unsupported_extension": {"layers.roads.extension": "gif"},
    "mime_type_mismatch": {"layers.roads.mime_type": "image/jpeg"},
    "wrong_boolean": {"layers.roads.meta": "yes"},
    "wrong_integer": {"layers.roads.meta_size": "eight"},
    "integer_too_small": {"layers.roads.meta_size": 0},
    "expires_not_positive": {"layer_default.expires": 0},
    "meta_buffer_too_large": {"layers.roads.meta_buffer": 5000},
    "bbox_three_numbers": {"layers.roads.bbox": [0, 0, 1]},
    "bbox_inverted": {"layers.roads.bbox": [10, 0, 1, 1]},
    "bbox_outside_grid": {"layers.roads.bbox": [3e7, 3e7, 3.1e7, 3.1e7]},
    "mapfile_missing": {"layers.roads.mapfile": "missing.xml"},
    "url_on_mapnik_layer": {"layers.roads.url": "https://wms.example.org"},
    "connection_on_wms_layer": {"layers.ortho.connection": "dbname=osm"},
    "wms_version": {"layers.ortho.version": "1.1.0"},
    "wms_url_scheme": {"layers.ortho.url": "ftp://wms.example.org"},
    "wms_reserved_param": {"layers.ortho.params": {"BBOX": "0,0,1,1"}},
    "wms_missing_layers": {"layers.ortho.layers": DELETE},
    "wms_negative_retries": {"layers.ortho.retries": -1},
    "info_formats_without_query_layers": {"layers.ortho.info_formats": ["text/html"]},
    "dimension_reserved_name": {
        "layers.roads.dimensions": [{"name": "Style", "values": ["a"], "default": "a"}]
    },
    "dimension_default_not_a_value": {
        "layers.roads.dimensions": [{"name": "YEAR", "values": ["2024"], "default": "2025"}]
    },
    "geoms_file_and_sql": {"layers.roads.geoms": [{"file": "sea.geojson", "sql": "g FROM t"}]},
    "geoms_select": {"layers.roads.geoms": [{"sql": "SELECT geom FROM t"}]},
    "geoms_in_layer_default": {"layer_default.geoms": [{"sql": "SELECT geom FROM t"}]},
    "empty_tile_without_hash": {"layers.roads.empty_tile_detection": {"size": 3}},
    "grid_resolutions_order": {"grids.a.resolutions": [1, 2, 4]},
    "grid_resolution_zero": {"grids.a.resolutions": [2, 0]},
    "grid_unknown_srs": {"grids.a.srs": "EPSG:999999"},
    "grid_tile_size": {"grids.a.tile_size": 0},
    "grid_matrix_identifier": {"grids.a.matrix_identifier": "level"},
    "grid_unit": {"grids.a.unit": "degrees"},
    "grid_missing_bbox": {"grids.a.bbox": DELETE},
    "grid_resolutions_wrong_type": {"grids.a.resolutions": "1, 2"},
    "invalid_layer_name": {"layers.r o a d s": {"type": "mapnik"}},
    "cache_key_of_other_type": {"caches.fs.bucket": "tiles"},
    "cache_unknown_type": {"caches.bucket.type": "gcs"},
    "cache_http_url": {"caches.bucket.http_url": "tiles.example.org"},
    "cache_capabilities_outside": {"caches.fs.wmtscapabilities_file": "../caps.xml"},
    "server_port": {"server.port": 70000},
    "server_url": {"server.url": "maps.example.org"},
    "server_log_format": {"server.log_format": "xml"},
    "admin_token_env": {"server.admin.token_env": "ADMIN-TOKEN"},
    "memcached_server": {"memcached.servers": ["memcached"]},
    "memcached_prefix": {"memcached.prefix": "a b"},
    "metadata_keywords": {"metadata.keywords": {"a": "b"}},
    "provider_unknown": {"provider.contact.info.address.town": "Bern"},
    "cost_negative": {"cost.s3.put": -1},
    "generation_queue": {"generation.queue": "kafka"},
    "queue_without_section": {"generation.queue": "redis"},
    "sqs_fifo": {"sqs.queue": "tiles.fifo"},
    "sns_topic": {"sns.topic": "tiles"},
    "redis_url": {"redis.url": "http://127.0.0.1:6379"},
    "no_layers": {"layers": {}},
    "no_grids": {"grids": DELETE},
    "layer_not_a_mapping": {"layers.roads": ["a"]},
    "section_not_a_mapping": {"server": "fast"},
}


ALLOWED = re.compile(r" \(allowed: [^)]*\)")
# The cache types offered grow too (MBTiles, GeoPackage, PMTiles: issue 18): the frozen
# message lists the first ones, the message now must still begin with them.
CACHE_TYPES = re.compile(r"\(supported: filesystem, s3(, [a-z0-9, ]+)?\)")


def messages_of(changes: dict[str, Any]) -> list[str]:
    """The messages parse_config reports for BASE with changes ([] when it accepts it)."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        _apply(data, path, value)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "style.xml").write_text("<Map/>")
        try:
            parse_config(data, Path(folder))
        except ConfigError as exc:
            # The list of allowed keys grows with the keys understood: not frozen.
            return [
                CACHE_TYPES.sub(
                    "(supported: filesystem, s3)",
                    ALLOWED.sub(" (allowed: ...)", m.replace(folder, "<dir>")),
                )
                for m in exc.messages
            ]
    return []


# Frozen from the hand-written validator (before issue 13's rebuild).
# fmt: off
EXPECTED: dict[str, list[str]] = {
    "unknown_top_level_key": [
        "layer_defaults: unknown key; did you mean 'layer_default'? (allowed: ...)",
    ],
    "unknown_layer_key_did_you_mean": [
        "layers.roads.meta_sise: unknown key; did you mean 'meta_size'? (allowed: ...)",
    ],
    "unknown_key_in_layer_default": [
        "layers.roads.meta_sise: unknown key; did you mean 'meta_size'? (allowed: ...) (set in layer_default)",
        "layers.ortho.meta_sise: unknown key; did you mean 'meta_size'? (allowed: ...) (set in layer_default)",
    ],
    "unknown_grid": [
        "layers.roads.grid: unknown grid 'x' (defined: a, b)",
    ],
    "unknown_grid_in_layer_default": [
        "layers.roads.grid: unknown grid 'x' (defined: a, b) (set in layer_default)",
        "layers.ortho.grid: unknown grid 'x' (defined: a, b) (set in layer_default)",
    ],
    "unknown_cache": [
        "layers.roads.cache: unknown cache 'nope' (defined: fs, bucket)",
    ],
    "unknown_default_cache": [
        "generation.default_cache: unknown cache 'nope' (defined: fs, bucket)",
    ],
    "unknown_default_layer": [
        "generation.default_layers[1]: unknown layer 'rivers' (defined: roads, ortho)",
    ],
    "unknown_layer_type": [
        "layers.roads.type: unknown layer type 'wmts' (supported: mapnik, wms)",
    ],
    # Changed on purpose (issue 13): TileCloud-chain 1.x takes `wms` where type is absent
    # (its schema's default), so only a layer that cannot be a WMS one is refused, saying why.
    "missing_layer_type": [
        "layers.roads.type: missing required key: a layer with a `mapfile` is `type: mapnik` (where type is absent, TileCloud-chain 1.x takes `wms`)",
    ],
    "unsupported_extension": [
        "layers.roads.extension: unsupported extension 'gif' (supported: png, jpeg)",
    ],
    "mime_type_mismatch": [
        "layers.roads.mime_type: 'image/jpeg' does not match extension 'png'",
    ],
    "wrong_boolean": [
        "layers.roads.meta: expected true or false, got str 'yes'",
    ],
    "wrong_integer": [
        "layers.roads.meta_size: expected an integer, got str 'eight'",
    ],
    "integer_too_small": [
        "layers.roads.meta_size: must be at least 1, got 0",
    ],
    "expires_not_positive": [
        "layers.roads.expires: must be greater than 0, got 0 (set in layer_default)",
        "layers.ortho.expires: must be greater than 0, got 0 (set in layer_default)",
    ],
    "meta_buffer_too_large": [
        "layers.roads.meta_buffer: at most 1024 pixels, got 5000",
    ],
    "bbox_three_numbers": [
        "layers.roads.bbox: expected 4 numbers [minx, miny, maxx, maxy], got 3",
    ],
    "bbox_inverted": [
        "layers.roads.bbox: minx must be < maxx and miny < maxy, got [10.0, 0.0, 1.0, 1.0]",
    ],
    "bbox_outside_grid": [
        "layers.roads.bbox: [30000000.0, 30000000.0, 31000000.0, 31000000.0] is outside grid 'a'",
    ],
    "mapfile_missing": [
        "layers.roads.mapfile: cannot read Mapnik file '<dir>/missing.xml': no such file",
    ],
    "url_on_mapnik_layer": [
        "layers.roads.url: only for layers of type 'wms' (this layer is of type 'mapnik')",
    ],
    "connection_on_wms_layer": [
        "layers.ortho.connection: only for layers of type 'mapnik' (PostGIS datasources)",
    ],
    "wms_version": [
        "layers.ortho.version: expected one of 1.1.1, 1.3.0, got '1.1.0'",
    ],
    "wms_url_scheme": [
        "layers.ortho.url: expected an http:// or https:// URL, got 'ftp://wms.example.org'",
    ],
    "wms_reserved_param": [
        "layers.ortho.params.BBOX: set by tileserver for each request; remove it from params",
    ],
    "wms_missing_layers": [
        "layers.ortho.layers: missing required key",
    ],
    "wms_negative_retries": [
        "layers.ortho.retries: must be at least 0, got -1",
    ],
    "info_formats_without_query_layers": [
        "layers.ortho.info_formats: needs query_layers (the WMS layers GetFeatureInfo queries)",
    ],
    "dimension_reserved_name": [
        "layers.roads.dimensions[0].name: invalid dimension name 'Style'",
    ],
    "dimension_default_not_a_value": [
        "layers.roads.dimensions[0].default: '2025' is not one of the values ['2024']",
    ],
    "geoms_file_and_sql": [
        "layers.roads.geoms[0]: needs exactly one of 'file' and 'sql', not both",
        "layers.roads.geoms[0].file: cannot read geometry file '<dir>/sea.geojson': no such file",
    ],
    "geoms_select": [
        "layers.roads.geoms[0].sql: write it without the leading SELECT, e.g. 'way AS geom FROM ...'",
    ],
    "geoms_in_layer_default": [
        "layers.roads.geoms[0].sql: write it without the leading SELECT, e.g. 'way AS geom FROM ...' (set in layer_default)",
        "layers.ortho.geoms[0].sql: write it without the leading SELECT, e.g. 'way AS geom FROM ...' (set in layer_default)",
    ],
    "empty_tile_without_hash": [
        "layers.roads.empty_tile_detection.hash: missing required key",
    ],
    "grid_resolutions_order": [
        "grids.a.resolutions: resolutions must be sorted from the largest to the smallest",
    ],
    "grid_resolution_zero": [
        "grids.a.resolutions: resolutions must be greater than 0",
    ],
    "grid_unknown_srs": [
        "grids.a.srs: unknown CRS 'EPSG:999999' (expected e.g. 'EPSG:3857')",
    ],
    "grid_tile_size": [
        "grids.a.tile_size: must be at least 1, got 0",
    ],
    "grid_matrix_identifier": [
        "grids.a.matrix_identifier: expected 'zoom' or 'resolution', got 'level'",
    ],
    "grid_unit": [
        "grids.a.unit: EPSG:3857 is in m, not 'degrees'",
    ],
    "grid_missing_bbox": [
        "grids.a.bbox: missing required key",
    ],
    "grid_resolutions_wrong_type": [
        "grids.a.resolutions: expected a non-empty list of numbers, got str '1, 2'",
    ],
    "invalid_layer_name": [
        "layers.r o a d s: invalid name 'r o a d s': use letters, digits, '_', '-' and '.'",
    ],
    "cache_key_of_other_type": [
        "caches.fs.bucket: unknown key (allowed: ...)",
    ],
    "cache_unknown_type": [
        "caches.bucket.type: unknown cache type 'gcs' (supported: filesystem, s3)",
    ],
    "cache_http_url": [
        "caches.bucket.http_url: expected an http:// or https:// URL, got 'tiles.example.org'",
    ],
    "cache_capabilities_outside": [
        "caches.fs.wmtscapabilities_file: must be a relative path inside the cache, got '../caps.xml'",
    ],
    "server_port": [
        "server.port: must be at most 65535, got 70000",
    ],
    "server_url": [
        "server.url: expected an http:// or https:// URL, got 'maps.example.org'",
    ],
    "server_log_format": [
        "server.log_format: expected one of text, json, got 'xml'",
    ],
    "admin_token_env": [
        "server.admin.token_env: expected the name of an environment variable, got 'ADMIN-TOKEN'",
    ],
    "memcached_server": [
        "memcached.servers[0]: expected 'host:port', got 'memcached'",
    ],
    "memcached_prefix": [
        "memcached.prefix: must be at most 100 letters, digits or '_-.:/' characters",
    ],
    "metadata_keywords": [
        "metadata.keywords: expected a list of strings, got a mapping",
    ],
    "provider_unknown": [
        "provider.contact.info.address.town: unknown key (allowed: ...)",
    ],
    "cost_negative": [
        "cost.s3.put: must be at least 0, got -1",
    ],
    "generation_queue": [
        "generation.queue: expected one of sqs, redis, got 'kafka'",
    ],
    "queue_without_section": [
        "generation.queue: 'redis' needs a `redis` section (see the README, 'Generation across many machines')",
    ],
    "sqs_fifo": [
        "sqs.queue: expected an SQS queue name of at most 80 letters, digits, '-' and '_', got 'tiles.fifo' (FIFO queues are not supported)",
    ],
    "sns_topic": [
        "sns.topic: expected an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), got 'tiles'",
    ],
    "redis_url": [
        "redis.url: expected a redis://host:port, rediss:// or unix:// URL, got 'http://127.0.0.1:6379'",
    ],
    "no_layers": [
        "layers: no layer defined",
        "generation.default_layers[0]: unknown layer 'roads' (defined: none)",
    ],
    "no_grids": [
        "grids: missing required section",
    ],
    "layer_not_a_mapping": [
        "layers.roads: expected a mapping, got a list",
    ],
    "section_not_a_mapping": [
        "server: expected a mapping, got str 'fast'",
    ],
}
# fmt: on


def test_base_config_is_valid() -> None:
    assert messages_of({}) == []


def test_every_case_is_frozen() -> None:
    assert set(EXPECTED) == set(CASES)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_frozen_messages_are_still_reported(case_id: str) -> None:
    reported = messages_of(CASES[case_id])
    missing = [m for m in EXPECTED[case_id] if m not in reported]
    assert not missing, f"no longer reported: {missing}\nreported now: {reported}"
