"""Unit tests of tileserver.config (parse_config) and tileserver.config_loader (load_config)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tileserver.config import Config, parse_config
from tileserver.config_loader import load_config
from tileserver.errors import ConfigError

MAPFILE = "/work/main/config/styles/osm.xml"
HALF = 20037508.342789244


def base() -> dict[str, Any]:
    """A small valid configuration, to be spoiled by each test."""
    return {
        "grids": {
            "epsg3857": {
                "srs": "EPSG:3857",
                "bbox": [-HALF, -HALF, HALF, HALF],
                "resolutions": [156543.03392804097 / 2**z for z in range(19)],
            },
            "epsg2056": {
                "srs": "EPSG:2056",
                "bbox": [2420000, 1030000, 2900000, 1350000],
                "resolutions": [4000, 1000, 250, 100, 10, 1],
                "matrix_identifier": "resolution",
            },
        },
        "caches": {"local": {"type": "filesystem", "folder": "/var/tmp/tiles"}},
        "layer_default": {"type": "mapnik", "mapfile": MAPFILE},
        "layers": {
            "roads": {"grid": "epsg3857", "bbox": [824000, 5421800, 829500, 5428000]},
            "rivers": {"grid": "epsg2056", "meta_size": 4, "expires": 0.5},
        },
        "generation": {"default_layers": ["roads"]},
    }


def parse(data: dict[str, Any], base_dir: Path = Path("/work/main/config")) -> Config:
    return parse_config(data, base_dir=base_dir)


def messages_of(data: dict[str, Any], base_dir: Path = Path("/work/main/config")) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir)
    assert str(info.value) == "\n".join(info.value.messages)
    return info.value.messages


# --- a valid configuration -----------------------------------------------------------------


def test_valid_config_parses_with_defaults() -> None:
    config = parse(base())
    assert list(config.grids) == ["epsg3857", "epsg2056"]
    assert list(config.layers) == ["roads", "rivers"]
    roads = config.layers["roads"]
    assert roads.type == "mapnik"  # from layer_default
    assert roads.mapfile == Path(MAPFILE)  # from layer_default
    assert roads.grid is config.grids["epsg3857"]
    assert roads.bbox.as_tuple() == (824000, 5421800, 829500, 5428000)
    assert roads.title == "roads"
    assert roads.expires_hours == 4.0
    assert roads.ttl_seconds == 14400
    assert (roads.meta, roads.meta_size, roads.meta_buffer) == (True, 8, 32)
    assert roads.effective_meta_size == 8
    assert (roads.extension, roads.mime_type) == ("png", "image/png")
    assert roads.output_format == "png:z=1"
    assert roads.wmts_style == "default"
    assert roads.dimensions == ()
    assert roads.cache is None
    assert roads.min_resolution_seed is None
    assert roads.is_on_demand(0)
    assert config.generation.default_layers == ("roads",)
    assert config.memcached is None
    assert (config.server.host, config.server.port, config.server.workers) == ("127.0.0.1", 8080, 1)


def test_layer_values_override_layer_default() -> None:
    rivers = parse(base()).layers["rivers"]
    assert rivers.meta_size == 4
    assert rivers.ttl_seconds == 1800
    assert rivers.bbox == rivers.grid.bbox  # no bbox: the grid's


def test_grid_facts_come_from_the_crs() -> None:
    grids = parse(base()).grids
    assert grids["epsg3857"].crs_urn == "urn:ogc:def:crs:EPSG::3857"
    assert grids["epsg2056"].matrix_id(2) == "250"


def test_relative_mapfile_is_read_from_the_config_directory() -> None:
    data = base()
    data["layer_default"]["mapfile"] = "styles/osm.xml"
    assert parse(data).layers["roads"].mapfile == Path(MAPFILE)


def test_generation_default_cache_is_the_layers_cache() -> None:
    data = base()
    data["generation"]["default_cache"] = "local"
    data["layers"]["rivers"]["cache"] = "local"
    config = parse(data)
    assert config.generation.default_cache == "local"
    assert config.layers["roads"].cache == "local"


def test_jpeg_layer_and_dimensions() -> None:
    data = base()
    data["layers"]["photo"] = {
        "grid": "epsg3857",
        "extension": "jpeg",
        "dimensions": [{"name": "TIME", "values": [2020, "2021"], "default": "2021"}],
    }
    photo = parse(data).layers["photo"]
    assert (photo.mime_type, photo.output_format) == ("image/jpeg", "jpeg85")
    assert [(d.name, d.values, d.default) for d in photo.dimensions] == [
        ("TIME", ("2020", "2021"), "2021")
    ]


def test_full_memcached_section() -> None:
    data = base()
    data["memcached"] = {"servers": ["10.0.0.1:11211", "[::1]:11212"], "prefix": "demo/"}
    memcached = parse(data).memcached
    assert memcached is not None
    assert memcached.servers == (("10.0.0.1", 11211), ("::1", 11212))
    assert memcached.prefix == "demo/"


# --- one mistake at a time ------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Sets data[a][b][c] = value for path 'a.b.c'."""

    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return apply


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[last]

    return apply


def _both(
    first: Callable[[dict[str, Any]], None], second: Callable[[dict[str, Any]], None]
) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        first(data)
        second(data)

    return apply


YEARS = {
    "name": "YEAR",
    "values": ["2024", "2025"],
    "default": "2025",
    "generate": ["2024", "2025"],
}

MISTAKES: list[tuple[str, Callable[[dict[str, Any]], None], str, list[str]]] = [
    (
        "unknown grid",
        _set("layers.roads.grid", "swissgrid"),
        "layers.roads.grid",
        ["unknown grid 'swissgrid' (defined: epsg3857, epsg2056)"],
    ),
    (
        "typo with did-you-mean",
        _set("layers.roads.meta_sise", 4),
        "layers.roads.meta_sise",
        ["unknown key", "did you mean 'meta_size'?"],
    ),
    (
        "typo at the root",
        _set("layer_defaults", {}),
        "layer_defaults",
        ["unknown key", "did you mean 'layer_default'?"],
    ),
    (
        "missing resolutions",
        _delete("grids.epsg2056.resolutions"),
        "grids.epsg2056.resolutions",
        ["missing required key"],
    ),
    (
        "missing srs",
        _delete("grids.epsg2056.srs"),
        "grids.epsg2056.srs",
        ["missing required key"],
    ),
    (
        "missing layers",
        _delete("layers"),
        "layers",
        ["missing required section"],
    ),
    (
        "no layer",
        _both(_set("layers", {}), _set("generation", {})),
        "layers",
        ["no layer defined"],
    ),
    (
        "wrong type",
        _set("layers.roads.meta_size", "eight"),
        "layers.roads.meta_size",
        ["expected an integer, got str 'eight'"],
    ),
    (
        "boolean expected",
        _set("layers.roads.meta", "yes"),
        "layers.roads.meta",
        ["expected true or false"],
    ),
    (
        "too small",
        _set("layers.roads.meta_size", 0),
        "layers.roads.meta_size",
        ["must be at least 1, got 0"],
    ),
    (
        "not positive",
        _set("layers.roads.expires", 0),
        "layers.roads.expires",
        ["must be greater than 0"],
    ),
    (
        "unsorted resolutions",
        _set("grids.epsg2056.resolutions", [1000, 4000, 250]),
        "grids.epsg2056.resolutions",
        ["sorted from the largest to the smallest"],
    ),
    (
        "repeated resolution",
        _set("grids.epsg2056.resolutions", [1000, 1000]),
        "grids.epsg2056.resolutions",
        ["sorted from the largest to the smallest"],
    ),
    (
        "negative resolution",
        _set("grids.epsg2056.resolutions", [1000, -1]),
        "grids.epsg2056.resolutions",
        ["must be greater than 0"],
    ),
    (
        "resolutions not numbers",
        _set("grids.epsg2056.resolutions", [1000, "fine"]),
        "grids.epsg2056.resolutions",
        ["expected a non-empty list of numbers"],
    ),
    (
        "bbox of 3 numbers",
        _set("grids.epsg2056.bbox", [2420000, 1030000, 2900000]),
        "grids.epsg2056.bbox",
        ["expected 4 numbers [minx, miny, maxx, maxy], got 3"],
    ),
    (
        "inverted bbox",
        _set("grids.epsg2056.bbox", [2900000, 1030000, 2420000, 1350000]),
        "grids.epsg2056.bbox",
        ["minx must be < maxx and miny < maxy"],
    ),
    (
        "inverted layer bbox",
        _set("layers.roads.bbox", [829500, 5421800, 824000, 5428000]),
        "layers.roads.bbox",
        ["minx must be < maxx and miny < maxy"],
    ),
    (
        "layer bbox outside its grid",
        _set("layers.rivers.bbox", [824000, 5421800, 829500, 5428000]),
        "layers.rivers.bbox",
        ["is outside grid 'epsg2056'"],
    ),
    (
        "unknown srs",
        _set("grids.epsg2056.srs", "EPSG:999999"),
        "grids.epsg2056.srs",
        ["unknown CRS 'EPSG:999999'"],
    ),
    (
        "bad matrix_identifier",
        _set("grids.epsg2056.matrix_identifier", "scale"),
        "grids.epsg2056.matrix_identifier",
        ["expected 'zoom' or 'resolution', got 'scale'"],
    ),
    (
        "undefined cache",
        _set("layers.roads.cache", "s3"),
        "layers.roads.cache",
        ["unknown cache 's3' (defined: local)"],
    ),
    (
        "unknown cache type",
        _set("caches.local.type", "redis"),
        "caches.local.type",
        ["unknown cache type 'redis'"],
    ),
    (
        "default_layers names an undefined layer",
        _set("generation.default_layers", ["roads", "railways"]),
        "generation.default_layers[1]",
        ["unknown layer 'railways' (defined: roads, rivers)"],
    ),
    (
        "mapfile does not exist",
        _set("layers.roads.mapfile", "styles/missing.xml"),
        "layers.roads.mapfile",
        ["cannot read Mapnik file '/work/main/config/styles/missing.xml': no such file"],
    ),
    (
        "mapfile is a directory",
        _set("layers.roads.mapfile", "/work/main/config/styles"),
        "layers.roads.mapfile",
        ["cannot read Mapnik file '/work/main/config/styles': not a readable file"],
    ),
    (
        "mime_type does not match the extension",
        _set("layers.roads.mime_type", "image/jpeg"),
        "layers.roads.mime_type",
        ["'image/jpeg' does not match extension 'png'"],
    ),
    (
        "unsupported extension",
        _set("layers.roads.extension", "gif"),
        "layers.roads.extension",
        ["unsupported extension 'gif'"],
    ),
    (
        "dimension default not in values",
        _set("layers.roads.dimensions", [{"name": "TIME", "values": ["2020"], "default": "2021"}]),
        "layers.roads.dimensions[0].default",
        ["'2021' is not one of the values ['2020']"],
    ),
    (
        "dimension named like a WMTS parameter",
        _set("layers.roads.dimensions", [{"name": "Style", "values": ["a"], "default": "a"}]),
        "layers.roads.dimensions[0].name",
        ["invalid dimension name 'Style'"],
    ),
    (
        "dimension value with a slash",
        _set("layers.roads.dimensions", [{"name": "TIME", "values": ["a/b"], "default": "a/b"}]),
        "layers.roads.dimensions[0].values",
        ["invalid value 'a/b'"],
    ),
    (
        "invalid layer name",
        _set("layers.bad name", {"grid": "epsg3857"}),
        "layers.bad name",
        ["invalid name 'bad name'"],
    ),
    (
        "invalid style name",
        _set("layers.roads.wmts_style", "my style"),
        "layers.roads.wmts_style",
        ["invalid style name 'my style'"],
    ),
    (
        "layer not a mapping",
        _set("layers.roads", ["epsg3857"]),
        "layers.roads",
        ["expected a mapping, got a list"],
    ),
    (
        "unknown layer type",
        _set("layers.roads.type", "wfs"),
        "layers.roads.type",
        ["unknown layer type 'wfs' (supported: mapnik, wms)"],
    ),
    (
        "wms layer without its layers",
        lambda d: d["layers"]["roads"].update(type="wms", url="http://127.0.0.1:9/wms"),
        "layers.roads.layers",
        ["missing required key"],
    ),
    (
        "memcached server without port",
        _set("memcached", {"servers": ["localhost"]}),
        "memcached.servers[0]",
        ["expected 'host:port', got 'localhost'"],
    ),
    (
        "server port too large",
        _set("server", {"port": 70000}),
        "server.port",
        ["must be at most 65535, got 70000"],
    ),
    (
        "grid unit contradicts the CRS",
        _set("grids.epsg2056.unit", "degrees"),
        "grids.epsg2056.unit",
        ["EPSG:2056 is in m, not 'degrees'"],
    ),
    (
        "MBTiles for the Swiss grid",
        _both(
            _set("caches.mb", {"type": "mbtiles", "folder": "/var/tmp/mb"}),
            _set("layers.rivers.cache", "mb"),
        ),
        "layers.rivers.cache",
        ["cache 'mb' is mbtiles", "Web Mercator tiles only", "use a geopackage cache"],
    ),
    (
        "MBTiles without file nor folder",
        _set("caches.mb", {"type": "mbtiles"}),
        "caches.mb.file",
        ["a mbtiles cache needs `file` or `folder`, not neither"],
    ),
    (
        "GeoPackage with file and folder",
        _set("caches.gp", {"type": "geopackage", "file": "/a.gpkg", "folder": "/b"}),
        "caches.gp.file",
        ["needs `file` or `folder`, not both"],
    ),
    (
        "PMTiles from an s3:// URL",
        _set("caches.pm", {"type": "pmtiles", "url": "s3://tiles/osm.pmtiles"}),
        "caches.pm.url",
        ["expected an http:// or https:// URL"],
    ),
    (
        "one PMTiles archive for two layers",
        _both(
            _set("caches.pm", {"type": "pmtiles", "file": "/var/tmp/osm.pmtiles"}),
            _both(
                _set("layers.roads.cache", "pm"),
                _both(_set("layers.rivers.cache", "pm"), _set("layers.rivers.grid", "epsg3857")),
            ),
        ),
        "caches.pm",
        ["one pmtiles file holds one layer, and roads, rivers use it"],
    ),
    (
        "one MBTiles file for a layer on two grids",
        _both(
            _set("caches.mb", {"type": "mbtiles", "file": "/var/tmp/roads.mbtiles"}),
            _both(_set("layers.roads.cache", "mb"), _set("layers.roads.grids", ["epsg3857"] * 2)),
        ),
        "layers.roads.cache",
        ["one mbtiles file holds one tileset, and the layer has 2 grids", "use `folder`"],
    ),
    (
        "one PMTiles archive for two values of a dimension",
        _both(
            _set("caches.pm", {"type": "pmtiles", "url": "https://cdn.example.org/r.pmtiles"}),
            _both(_set("layers.roads.cache", "pm"), _set("layers.roads.dimensions", [YEARS])),
        ),
        "layers.roads.cache",
        ["one pmtiles file holds one tileset, and the layer has 2 values of YEAR"],
    ),
    (
        "a file for a folder store",
        _set("caches.local.file", "/var/tmp/tiles.mbtiles"),
        "caches.local.file",
        ["did you mean 'folder'? (allowed: folder, hosts, http_url, http_urls, type, wmtscap"],
    ),
    (
        "memcached and redis_cache without a choice",
        _both(
            _set("memcached", {"servers": ["127.0.0.1:11211"]}),
            _set("redis_cache", {"url": "redis://127.0.0.1:6379/2"}),
        ),
        "server.tile_cache",
        ["both `memcached` and `redis_cache` are set"],
    ),
    (
        "redis_cache without a server",
        _set("redis_cache", {"db": 1}),
        "redis_cache.url",
        ["set one of `url`, `servers` or `sentinels`"],
    ),
    (
        "redis_cache with a sentinel without port",
        _set("redis_cache", {"sentinels": ["sentinel.example.org"]}),
        "redis_cache.sentinels[0]",
        ["expected 'host:port'"],
    ),
    (
        "tile_cache redis without its section",
        _set("server.tile_cache", "redis"),
        "server.tile_cache",
        ["'redis' needs a `redis_cache` section"],
    ),
]


@pytest.mark.parametrize(
    ("spoil", "path", "gist"),
    [m[1:] for m in MISTAKES],
    ids=[m[0] for m in MISTAKES],
)
def test_each_mistake_names_its_path(
    spoil: Callable[[dict[str, Any]], None], path: str, gist: list[str]
) -> None:
    data = base()
    spoil(data)
    messages = messages_of(data)
    assert len(messages) == 1, messages
    where, _, message = messages[0].partition(": ")
    assert where == path
    for part in gist:
        assert part in message


def test_the_did_you_mean_hint_lists_the_allowed_keys() -> None:
    data = base()
    data["layers"]["roads"]["meta_sise"] = 4
    (message,) = messages_of(data)
    assert "(allowed: abstract, bbox, cache," in message
    assert "meta_size" in message.partition("allowed:")[2]


def test_undefined_generation_default_cache_is_reported_at_its_place() -> None:
    data = base()
    data["generation"]["default_cache"] = "nope"
    messages = messages_of(data)
    assert "generation.default_cache: unknown cache 'nope' (defined: local)" in messages


def test_undefined_generation_default_cache_is_not_blamed_on_the_layers() -> None:
    """The layers do not set `cache`: a message at layers.<name>.cache names a YAML path
    that does not exist, and repeats the one mistake once per layer."""
    data = base()
    data["generation"]["default_cache"] = "nope"
    assert messages_of(data) == ["generation.default_cache: unknown cache 'nope' (defined: local)"]


# --- mistakes that come from layer_default --------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "gist"),
    [
        ("meta_size", 0, "must be at least 1, got 0"),
        ("mapfile", "styles/missing.xml", "no such file"),
        ("meta_sise", 4, "did you mean 'meta_size'?"),
        ("mime_type", "image/jpeg", "does not match extension 'png'"),
        ("grid", "swissgrid", "unknown grid 'swissgrid'"),
    ],
)
def test_mistake_from_layer_default_says_so(key: str, value: Any, gist: str) -> None:
    data = base()
    data["layers"] = {"roads": {"bbox": [824000, 5421800, 829500, 5428000]}}
    data["generation"] = {}
    data["layer_default"][key] = value
    if key != "grid":
        data["layer_default"]["grid"] = "epsg3857"
    (message,) = messages_of(data)
    assert message.startswith(f"layers.roads.{key}: ")
    assert gist in message
    assert message.endswith("(set in layer_default)")


def test_mistake_set_in_the_layer_itself_does_not_blame_layer_default() -> None:
    data = base()
    data["layer_default"]["meta_size"] = 8
    data["layers"]["roads"]["meta_size"] = 0
    (message,) = messages_of(data)
    assert message == "layers.roads.meta_size: must be at least 1, got 0"


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        (
            "dimensions",
            [{"name": "TIME", "values": ["2020"], "default": "2021"}],
            "layers.roads.dimensions[0].default",
        ),
        (
            "empty_tile_detection",
            {"size": -1, "hash": "abc"},
            "layers.roads.empty_tile_detection.size",
        ),
    ],
)
def test_nested_mistake_from_layer_default_says_so(key: str, value: Any, path: str) -> None:
    data = base()
    del data["layers"]["rivers"]
    data["layer_default"][key] = value
    (message,) = messages_of(data)
    assert message.startswith(f"{path}: ")
    assert message.endswith("(set in layer_default)")


# --- several mistakes -----------------------------------------------------------------------


def test_every_mistake_of_a_stage_is_reported_at_once() -> None:
    data = base()
    data["layers"]["roads"].update(grid="swissgrid", meta_size="eight", mime_type="image/jpeg")
    data["layers"]["rivers"]["cache"] = "s3"
    data["generation"]["default_layers"] = ["railways"]
    assert messages_of(data) == [
        "layers.roads.grid: unknown grid 'swissgrid' (defined: epsg3857, epsg2056)",
        "layers.roads.meta_size: expected an integer, got str 'eight'",
        "layers.roads.mime_type: 'image/jpeg' does not match extension 'png'",
        "layers.rivers.cache: unknown cache 's3' (defined: local)",
        "generation.default_layers[0]: unknown layer 'railways' (defined: none)",
    ]


def test_every_grid_mistake_is_reported_at_once() -> None:
    data = base()
    data["grids"]["epsg2056"]["bbox"] = [1, 2, 3]
    data["grids"]["epsg2056"]["srs"] = "EPSG:999999"
    data["grids"]["epsg3857"]["resolutions"] = [1, 2]
    data["grids"]["epsg3857"]["tile_sise"] = 512
    messages = messages_of(data)
    assert [m.partition(": ")[0] for m in messages] == [
        "grids.epsg3857.tile_sise",
        "grids.epsg3857.resolutions",
        "grids.epsg2056.bbox",
        "grids.epsg2056.srs",
    ]


@pytest.mark.parametrize("document", [None, [], "grids", 3])
def test_the_document_must_be_a_mapping(document: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(document, base_dir=Path("/"))
    assert info.value.messages == [info.value.messages[0]]
    assert "expected a mapping" in info.value.messages[0]


# --- load_config ----------------------------------------------------------------------------


VALID_YAML = f"""\
grids:
  g:
    srs: EPSG:3857
    bbox: [-{HALF}, -{HALF}, {HALF}, {HALF}]
    resolutions: [156543.03392804097, 78271.51696402048]
layers:
  osm:
    type: mapnik
    grid: g
    mapfile: {MAPFILE}
"""


def test_load_config_reads_yaml(tmp_path: Path) -> None:
    path = tmp_path / "tileserver.yaml"
    path.write_text(VALID_YAML)
    config = load_config(path)
    assert list(config.layers) == ["osm"]
    assert config.source == path.resolve()


def test_load_config_reads_the_mapfile_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "styles").mkdir()
    (tmp_path / "styles" / "map.xml").write_text("<Map/>")
    path = tmp_path / "tileserver.yaml"
    path.write_text(VALID_YAML.replace(MAPFILE, "styles/map.xml"))
    assert load_config(path).layers["osm"].mapfile == tmp_path / "styles" / "map.xml"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("grids:\n  g: {srs: EPSG:3857\nlayers: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (message,) = info.value.messages
    assert message.startswith(f"{path}: line 3, column ")
    assert "invalid YAML" in message


def test_tab_indentation_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("grids:\n  g:\n\tsrs: EPSG:3857\n")
    with pytest.raises(ConfigError, match=r"tabs\.yaml: line 3, column 1: invalid YAML"):
        load_config(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.messages == [f"{path}: the configuration is empty"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.messages == [
        f"{path}: cannot read the configuration: No such file or directory"
    ]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("metadata:\n  title: Z\xfcrich\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load_config(path)


def test_validation_errors_come_through_load_config(tmp_path: Path) -> None:
    path = tmp_path / "tileserver.yaml"
    path.write_text(VALID_YAML.replace("grid: g", "grid: h"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.messages == ["layers.osm.grid: unknown grid 'h' (defined: g)"]


MAKO_TEMPLATE = textwrap.dedent(
    """\
    <% layer_name = env['LAYER'] %>
    grids:
      g:
        srs: EPSG:3857
        bbox: [-{half}, -{half}, {half}, {half}]
        resolutions: [156543.03392804097]
    layers:
      ${{layer_name}}:
        type: mapnik
        grid: g
        mapfile: ${{env['MAPFILE']}}
    memcached:
      servers: ["${{env.get('MEMCACHED', '127.0.0.1:11211')}}"]
      prefix: "${{env['PREFIX']}}/"
    """
).format(half=HALF)


def test_mako_template_is_rendered_with_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tileserver.yaml.mako"
    path.write_text(MAKO_TEMPLATE)
    environ = {"LAYER": "osm", "MAPFILE": MAPFILE, "PREFIX": "prod", "MEMCACHED": "mc:11311"}
    config = load_config(path, environ=environ)
    assert list(config.layers) == ["osm"]
    assert config.memcached is not None
    assert config.memcached.servers == (("mc", 11311),)
    assert config.memcached.prefix == "prod/"


def test_mako_template_with_an_env_default(tmp_path: Path) -> None:
    path = tmp_path / "tileserver.yaml.mako"
    path.write_text(MAKO_TEMPLATE)
    config = load_config(path, environ={"LAYER": "osm", "MAPFILE": MAPFILE, "PREFIX": "p"})
    assert config.memcached is not None
    assert config.memcached.servers == (("127.0.0.1", 11211),)


def test_yaml_file_is_not_rendered_with_mako(tmp_path: Path) -> None:
    path = tmp_path / "tileserver.yaml"
    path.write_text(VALID_YAML.replace("type: mapnik", "type: mapnik\n    title: ${env['X']}"))
    assert load_config(path, environ={}).layers["osm"].title == "${env['X']}"


def test_mako_template_with_an_undefined_env_var(tmp_path: Path) -> None:
    path = tmp_path / "tileserver.yaml.mako"
    path.write_text(MAKO_TEMPLATE)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"LAYER": "osm", "MAPFILE": MAPFILE})
    (message,) = info.value.messages
    # The line of the file the user edits, and the variable to set (issue 13).
    line = MAKO_TEMPLATE.splitlines().index(next(
        x for x in MAKO_TEMPLATE.splitlines() if "PREFIX" in x)) + 1  # fmt: skip
    assert message == f"{path}: line {line}: the environment variable PREFIX is not set"


def test_mako_template_with_an_undefined_name(tmp_path: Path) -> None:
    path = tmp_path / "tileserver.yaml.mako"
    path.write_text("layers: ${prefix}\n")
    with pytest.raises(ConfigError, match=r"Mako template error: 'prefix' is not defined"):
        load_config(path, environ={})


def test_mako_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "tileserver.yaml.mako"
    path.write_text("layers: ${ 1 +\n")
    with pytest.raises(ConfigError, match=r"Mako template error: .*line: 1"):
        load_config(path, environ={})
