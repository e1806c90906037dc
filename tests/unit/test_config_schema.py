"""tileserver/config.schema.json: generated from the one typed description of the
configuration (tileserver/config/document.py), a valid JSON Schema that accepts the shipped
configurations and rejects the type mistakes parse_config rejects; --dump-config reads
back into an equal configuration.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tileserver.cli.controller import main
from tileserver.config import parse_config
from tileserver.config.dump import config_data
from tileserver.config.schema import json_schema
from tileserver.config_loader import render_text
from tileserver.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "config"
SCHEMA_FILE = "config.schema.json"
SCHEMA: dict[str, Any] = json.loads(
    resources.files("tileserver").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
HALF = 20037508.342789244
MONACO = [824000, 5421800, 829500, 5428000]


def schema_errors(data: Any) -> list[str]:
    """'path: message' of every schema error, nested ones (of allOf, if/then...) included."""

    def flatten(errors: Any) -> Iterator[jsonschema.ValidationError]:
        for error in errors:
            yield error
            yield from flatten(error.context or ())

    def where(error: jsonschema.ValidationError) -> str:
        # config.py's notation: layers.osm.geoms[0].sql
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)

    return [f"{where(e).lstrip('.')}: {e.message}" for e in flatten(VALIDATOR.iter_errors(data))]


def merc_grid(levels: int = 19, **extra: Any) -> dict[str, Any]:
    return {
        "srs": "EPSG:3857",
        "bbox": [-HALF, -HALF, HALF, HALF],
        "resolutions": [156543.03392804097 / 2**z for z in range(levels)],
        **extra,
    }


# A valid configuration that sets every key config.py reads, in every kind of section
# (both cache types, both layer types, a geoms `file` and an `sql` entry...).
MAXIMAL: dict[str, Any] = {
    "grids": {
        "merc": merc_grid(tile_size=256, matrix_identifier="zoom", unit="m"),
    },
    "caches": {
        "fs": {
            "type": "filesystem",
            "folder": "/var/tmp/tiles",
            "http_url": "https://tiles.example.org/",
            "http_urls": ["https://a.example.org/"],
            "wmtscapabilities_file": "/1.0.0/WMTSCapabilities.xml",
        },
        "bucket": {
            "type": "s3",
            "bucket": "tiles",
            "folder": "prod",
            "region": "eu-west-1",
            "endpoint_url": "http://127.0.0.1:8333",
            "cache_control": "public, max-age=86400",
            "http_url": "https://s3.example.org/tiles/prod",
            "http_urls": ["https://b.example.org/prod"],
            "wmtscapabilities_file": "caps.xml",
        },
        "mb": {
            "type": "mbtiles",
            "folder": "/var/tmp/mbtiles",
            "http_url": "https://c.example.org",
        },
        "gp": {"type": "geopackage", "file": "/var/tmp/tiles.gpkg"},
        "pm": {"type": "pmtiles", "url": "https://cdn.example.org/roads.pmtiles"},
    },
    "layer_default": {"meta_size": 4, "expires": 2},
    "layers": {
        "roads": {
            "type": "mapnik",
            "title": "Roads",
            "abstract": "Main roads",
            "grid": "merc",
            "bbox": MONACO,
            "mapfile": "styles/osm.xml",
            "meta": True,
            "meta_size": 8,
            "meta_buffer": 16,
            "mime_type": "image/png",
            "extension": "png",
            "output_format": "png32",
            "wmts_style": "default",
            "dimensions": [{"name": "YEAR", "values": [2024, "2025"], "default": "2025"}],
            "expires": 0.5,
            "stale_while_revalidate": 60,
            "stale_if_error": 3600,
            "min_resolution_seed": 19.1,
            "missing_tile": "no_content",
            "cache": "fs",
            "empty_tile_detection": {"size": 334, "hash": "ab" * 20},
            "empty_metatile_detection": {"size": 1000, "hash": "cd" * 20},
            "geoms": [
                {"file": "data/sea.geojson", "min_resolution": 10, "max_resolution": 1000},
                {
                    "sql": "way AS geom FROM planet_osm_polygon",
                    "connection": "dbname=osm",
                    "min_resolution": 0.1,
                    "max_resolution": 10,
                },
            ],
            "connection": "host=db dbname=osm",
        },
        "ortho": {
            "type": "wms",
            "grid": "merc",
            "extension": "jpeg",
            "url": "https://wms.example.org/wms",
            "layers": "ortho,roads",
            "version": "1.3.0",
            "params": {"STYLES": "", "TRANSPARENT": True, "DPI": 96},
            "headers": {"Referer": "https://maps.example.org/"},
            "generate_salt": True,
            "timeout": 10,
            "retries": 3,
            "query_layers": "roads",
            "info_formats": ["text/html", "application/json"],
        },
    },
    "generation": {
        "default_cache": "fs",
        "default_layers": ["roads"],
        "number_process": 2,
        "queue": "redis",
    },
    "server": {
        "host": "0.0.0.0",
        "port": 9000,
        "workers": 2,
        "render_processes": 2,
        "url": "https://maps.example.org",
        "memory_cache_mb": 64,
        "hot_cache_mb": 16,
        "hot_cache_max_age": 5,
        "render_timeout": 30,
        "log_format": "json",
        "access_log": False,
        "metrics": False,
        "shutdown_timeout": 12.5,
        "admin": {"enabled": True, "token_env": "MAPS_ADMIN_TOKEN"},
        "tile_cache": "redis",
    },
    "redis_cache": {
        "sentinels": ["10.0.0.3:26379", ["10.0.0.4", 26379]],
        "service_name": "tiles",
        "db": 2,
        "password": "secret",
        "prefix": "t/",
        "timeout": 0.5,
        "pool_size": 4,
        "retry_interval": 1,
        "lock_timeout": 30,
        "lock_lease": 3,
    },
    "memcached": {
        "servers": ["10.0.0.1:11211", "[::1]:11212"],
        "prefix": "tiles/",
        "timeout": 0.5,
        "pool_size": 4,
        "retry_interval": 1,
        "lock_timeout": 30,
        "lock_lease": 3,
    },
    "metadata": {
        "title": "Maps",
        "abstract": "A map",
        "keywords": ["a", "b"],
        "fees": "none",
        "access_constraints": "none",
        "servicetype": "OGC WMTS",
    },
    "provider": {
        "name": "Team",
        "url": "https://example.org",
        "contact": {
            "name": "Ann",
            "position": "Cartographer",
            "info": {
                "phone": {"voice": "+41 00", "fax": "+41 01"},
                "address": {
                    "delivery": "Street 1",
                    "city": "Bern",
                    "area": "BE",
                    "postal_code": "3000",
                    "country": "Switzerland",
                    "email": "a@example.org",
                },
            },
        },
    },
    "cost": {
        "metatile_generation_time": 20,
        "tile_generation_time": 20,
        "tileonly_generation_time": 40,
        "tile_size": 12,
        "requests_per_month": 1000,
        "s3": {"put": 0.0054, "get": 0.00043, "storage": 0.025, "download": 0.08},
        "sqs": {"request": 0.5},
    },
    "postgresql": {"connection": "host=127.0.0.1 dbname=osm"},
    "upstream": {"connections_per_host": 4, "retry_backoff": 0.25},
    "sqs": {
        "queue": "tiles",
        "errors_queue": "tiles-failed",
        "region": "eu-central-1",
        "endpoint_url": "http://127.0.0.1:5000",
        "visibility_timeout": 600,
        "max_tries": 3,
        "counts_delay": 0,
    },
    "sns": {
        "topic": "arn:aws:sns:eu-central-1:123456789012:tiles",
        "region": "eu-central-1",
        "endpoint_url": "http://127.0.0.1:5000",
    },
    "redis": {
        "url": "redis://:secret@10.0.0.2:6379/1",
        "stream": "tiles-jobs",
        "group": "workers",
        "claim_timeout": 120,
        "max_tries": 4,
        "timeout": 2.5,
    },
}

# Keys MAXIMAL cannot set beside its own (one of redis_cache's url, servers or sentinels; one
# of a single-file cache's file or folder).
ALTERNATIVES: list[dict[str, Any]] = [
    {**MAXIMAL, "redis_cache": {"url": "redis://:secret@10.0.0.2:6379/3"}},
    {**MAXIMAL, "redis_cache": {"servers": ["10.0.0.5:6379", "[::1]:6380"], "db": 1}},
    {
        **MAXIMAL,
        "caches": {
            "mb": {"type": "mbtiles", "file": "/var/tmp/roads.mbtiles"},
            "gp": {"type": "geopackage", "folder": "/var/tmp/gpkg"},
            "pm": {"type": "pmtiles", "file": "/var/tmp/roads.pmtiles"},
        },
        "generation": {**MAXIMAL["generation"], "default_cache": "gp"},
        "layers": {**MAXIMAL["layers"], "roads": {**MAXIMAL["layers"]["roads"], "cache": "mb"}},
    },
]

# What every configuration must have, and one layer of each type, each key left to its default.
MINIMAL: dict[str, Any] = {
    "grids": {"merc": merc_grid()},
    "caches": {
        "fs": {"type": "filesystem", "folder": "/var/tmp/tiles"},
        "bucket": {"type": "s3", "bucket": "tiles"},
    },
    "layers": {
        "roads": {"type": "mapnik", "grid": "merc", "mapfile": "styles/osm.xml"},
        "ortho": {"type": "wms", "grid": "merc", "url": "https://wms.example.org", "layers": "a"},
    },
    "memcached": {"servers": ["10.0.0.1:11211"]},
    "redis_cache": {"url": "redis://127.0.0.1:6379/1"},
    "generation": {"queue": "sqs"},  # both `sqs` and `redis` are set
    "server": {"admin": {}, "tile_cache": "memcached"},  # both `memcached` and `redis_cache`
    "metadata": {},
    "provider": {"contact": {"info": {"phone": {}, "address": {}}}},
    "cost": {"s3": {}, "sqs": {}},
    "postgresql": {},
    "upstream": {},
    "sqs": {"queue": "tiles"},
    "sns": {"topic": "arn:aws:sns:eu-west-1:123456789012:tiles"},
    "redis": {"url": "redis://127.0.0.1:6379"},
}


# --- the schema and what it accepts --------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_schema_is_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert SCHEMA_FILE in pyproject["tool"]["setuptools"]["package-data"]["tileserver"]
    assert "jsonschema" in " ".join(pyproject["project"]["optional-dependencies"]["test"])


def config_files() -> list[Path]:
    """Every tileserver configuration of the repository (YAML files and templates under config/
    and tests/ with a top-level `grids` or `layers`)."""
    found = [
        path
        for folder in (CONFIG_DIR, ROOT / "tests")
        for pattern in ("*.yaml", "*.yml", "*.yaml.mako", "*.yml.mako")
        for path in folder.rglob(pattern)
        if re.search(r"^(grids|layers):", path.read_text(encoding="utf-8"), re.MULTILINE)
    ]
    return sorted(found)


def test_the_demo_config_is_among_the_configs_checked() -> None:
    assert CONFIG_DIR / "demo.yaml.mako" in config_files()


# The environment docker-compose.yaml gives the server (and an empty one: the defaults).
COMPOSE_ENV = {
    "MEMCACHED_SERVERS": "memcached:11211",
    "TILESERVER_HOST": "0.0.0.0",
    "TILESERVER_PORT": "8080",
}


@pytest.mark.parametrize("environ", [{}, COMPOSE_ENV], ids=["defaults", "compose"])
@pytest.mark.parametrize("path", config_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_validate(path: Path, environ: dict[str, str]) -> None:
    data = yaml.safe_load(render_text(path, environ))
    assert schema_errors(data) == []
    parse_config(data, path.parent)  # and config.py agrees


def test_maximal_and_minimal_configs_are_valid() -> None:
    for data in (MAXIMAL, MINIMAL, *ALTERNATIVES):
        assert schema_errors(data) == []
        parse_config(copy.deepcopy(data), CONFIG_DIR)


def test_dump_config_output_validates(capsys: pytest.CaptureFixture[str]) -> None:
    """`generate_controller --dump-config` prints a configuration: it follows the schema."""
    assert main(["-c", str(CONFIG_DIR / "demo.yaml.mako"), "--dump-config"]) == 0
    dumped = yaml.safe_load(capsys.readouterr().out)
    assert set(dumped) >= {"grids", "layers"}
    assert schema_errors(dumped) == []
    # Every default written out, every kind of section.
    assert schema_errors(config_data(parse_config(copy.deepcopy(MAXIMAL), CONFIG_DIR))) == []


def test_dump_of_every_key_reads_back_into_an_equal_configuration() -> None:
    """MAXIMAL sets every key config.py reads: what --dump-config prints of it parses back
    into the same Config, so no key is forgotten by the dump (WMS sources, geoms,
    connections, upstream...)."""
    for data in (MAXIMAL, *ALTERNATIVES):
        config = parse_config(copy.deepcopy(data), CONFIG_DIR)
        text = yaml.safe_dump(config_data(config), sort_keys=False)
        assert parse_config(yaml.safe_load(text), CONFIG_DIR) == config


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of data with the dotted path set to value (the `...` Ellipsis deletes it)."""
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


# (path set, value, where both the schema and parse_config report it)
DIM, GEOM = "layers.roads.dimensions[0].name", "layers.roads.geoms[0]"
SEA = "data/sea.geojson"
WRONG = [
    ("layer_defaults", {"meta": True}, ""),
    ("layers.roads.meta_sise", 4, "layers.roads"),
    ("layers.roads.type", "wmts", "layers.roads.type"),
    ("layers.roads.extension", "gif", "layers.roads.extension"),
    ("layers.roads.expires", 0, "layers.roads.expires"),
    ("layers.roads.meta", "yes", "layers.roads.meta"),
    ("layers.roads.url", "https://wms.example.org", "layers.roads.url"),
    ("layers.ortho.connection", "dbname=osm", "layers.ortho.connection"),
    ("layers.ortho.version", "1.1.0", "layers.ortho.version"),
    ("layers.ortho.url", "ftp://wms.example.org", "layers.ortho.url"),
    ("layers.ortho.params", {"BBOX": "0,0,1,1"}, "layers.ortho.params"),
    ("layers.ortho.retries", -1, "layers.ortho.retries"),
    ("layers.roads.dimensions", [{"name": "Style", "values": ["a"], "default": "a"}], DIM),
    ("layers.roads.geoms", [{"file": SEA, "sql": "geom FROM t"}], GEOM),
    ("layers.roads.geoms", [{"sql": "SELECT geom FROM t"}], f"{GEOM}.sql"),
    ("layers.roads.geoms", [{"file": SEA, "connection": "dbname=osm"}], f"{GEOM}.connection"),
    ("layers.roads.empty_tile_detection", {"size": 3}, "layers.roads.empty_tile_detection"),
    ("grids.merc.tile_size", 0, "grids.merc.tile_size"),
    ("grids.merc.matrix_identifier", "level", "grids.merc.matrix_identifier"),
    ("grids.merc.bbox", [0, 0, 1], "grids.merc.bbox"),
    ("caches.fs.bucket", "tiles", "caches.fs"),
    ("caches.bucket.type", "gcs", "caches.bucket.type"),
    ("caches.mb.file", "/var/tmp/one.mbtiles", "caches.mb.file"),
    ("caches.pm.url", "s3://tiles/roads.pmtiles", "caches.pm.url"),
    ("caches.gp.url", "https://a.example.org/t.gpkg", "caches.gp.url"),
    ("caches.bucket.http_url", "tiles.example.org", "caches.bucket.http_url"),
    ("caches.fs.wmtscapabilities_file", "../caps.xml", "caches.fs.wmtscapabilities_file"),
    ("server.port", 70000, "server.port"),
    ("server.url", "maps.example.org", "server.url"),
    ("server.log_format", "xml", "server.log_format"),
    ("server.shutdown_timeout", 0, "server.shutdown_timeout"),
    ("server.admin.token_env", "ADMIN-TOKEN", "server.admin.token_env"),
    ("server.admin.token", "s3cret", "server.admin"),
    ("memcached.servers", ["memcached"], "memcached.servers"),
    ("memcached.prefix", "a b", "memcached.prefix"),
    ("server.tile_cache", "valkey", "server.tile_cache"),
    ("redis_cache.sentinels", ["sentinel.example.org"], "redis_cache.sentinels[0]"),
    ("redis_cache.url", "redis://127.0.0.1:6379", "redis_cache.url"),
    ("redis_cache.db", -1, "redis_cache.db"),
    ("metadata.keywords", {"a": "b"}, "metadata.keywords"),
    ("provider.contact.info.address.town", "Bern", "provider.contact.info.address"),
    ("cost.s3.put", -1, "cost.s3.put"),
    ("upstream.retry_backoff", -0.5, "upstream.retry_backoff"),
    ("generation.number_process", 0, "generation.number_process"),
    ("generation.queue", "kafka", "generation.queue"),
    ("sqs.queue", "tiles.fifo", "sqs.queue"),
    ("sqs.visibility_timeout", 50000, "sqs.visibility_timeout"),
    ("sqs.endpoint_url", "127.0.0.1:5000", "sqs.endpoint_url"),
    ("sqs.max_tries", 0, "sqs.max_tries"),
    ("sns.topic", "tiles", "sns.topic"),
    ("redis.url", "http://127.0.0.1:6379", "redis.url"),
    ("redis.claim_timeout", 0, "redis.claim_timeout"),
    ("redis.stream", "", "redis.stream"),
    ("cost.sqs.request", -1, "cost.sqs.request"),
    ("layers", {}, "layers"),
    ("grids", ..., ""),
]


# Rules the published schema does not express (URLs, names, cross-key rules): check-config's.
ONLY_CHECK_CONFIG = {
    "layers.roads.url", "layers.ortho.connection", "layers.ortho.url", "layers.ortho.params",
    DIM, GEOM, f"{GEOM}.sql", f"{GEOM}.connection", "grids.merc.bbox", "caches.fs",
    "caches.bucket.http_url", "caches.fs.wmtscapabilities_file", "server.url",
    "server.admin.token_env", "memcached.servers", "memcached.prefix", "sqs.queue",
    "sqs.endpoint_url", "sns.topic", "redis.url", "redis.stream", "layers", "caches.mb.file",
    "caches.pm.url", "caches.gp.url", "redis_cache.sentinels[0]",
    "redis_cache.url",
}  # fmt: skip


@pytest.mark.parametrize(("path", "value", "where"), WRONG, ids=[w[2] or w[0] for w in WRONG])
def test_wrong_configs_are_rejected_by_the_schema_and_by_parse_config(
    path: str, value: Any, where: str
) -> None:
    data = set_path(MAXIMAL, path, value)
    if where not in ONLY_CHECK_CONFIG:
        errors = schema_errors(data)
        assert any(e.startswith(where) for e in errors), errors
    with pytest.raises(ConfigError) as info:
        parse_config(data, CONFIG_DIR)
    assert any(m.startswith(where) for m in info.value.messages), info.value


# --- one source of truth ----------------------------------------------------------------------


def test_committed_schema_is_the_generated_one() -> None:
    """config.schema.json is generated from tileserver/config/document.py: run
    `python -m tileserver.config.schema` after changing a key."""
    assert json_schema() == SCHEMA, "tileserver/config.schema.json is stale: regenerate it"


def test_no_hand_written_list_of_keys_remains() -> None:
    """The keys are described once: no module of the package lists them beside document.py
    (the old validator's reader and the dump's writer are gone)."""
    package = ROOT / "tileserver"
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "_Section" not in text, path
        if path.name != "document.py":
            assert '"tileonly_generation_time"' not in text, path
