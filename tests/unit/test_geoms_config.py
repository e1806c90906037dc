"""A layer's `geoms` (TileCloud-chain's): validated when the configuration is loaded,
read only when a generation starts; and how its entries apply level by level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import shapely

from tileserver.config import Config, LayerGeom, parse_config
from tileserver.errors import ConfigError
from tileserver.selection import level_geometries, parse_geometry

MAPFILE = "/work/main/config/styles/osm.xml"
HALF = 20037508.342789244
RESOLUTIONS = [156543.03392804097 / 2**z for z in range(19)]
SQL = "way AS geom FROM planet_osm_polygon WHERE boundary = 'administrative'"


def base(tmp_path: Path, geoms: Any) -> dict[str, Any]:
    """A valid configuration whose layer `osm` has `geoms`; tmp_path holds area.geojson."""
    (tmp_path / "area.geojson").write_text('{"type": "Point", "coordinates": [826500, 5425200]}')
    return {
        "grids": {"epsg3857": {"srs": "EPSG:3857", "bbox": [-HALF, -HALF, HALF, HALF],
                               "resolutions": RESOLUTIONS}},
        "layer_default": {"type": "mapnik", "mapfile": MAPFILE, "grid": "epsg3857"},
        "layers": {"osm": {"bbox": [824000, 5421800, 829500, 5428000], "geoms": geoms}},
    }  # fmt: skip


def parse(tmp_path: Path, geoms: Any, **top: Any) -> Config:
    return parse_config({**base(tmp_path, geoms), **top}, base_dir=tmp_path)


def messages_of(tmp_path: Path, geoms: Any, **top: Any) -> list[str]:
    return parse_config_messages({**base(tmp_path, geoms), **top}, tmp_path)


def parse_config_messages(data: dict[str, Any], base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=base_dir)
    return info.value.messages


# --- valid entries --------------------------------------------------------------------------


def test_file_and_sql_entries(tmp_path: Path) -> None:
    config = parse(
        tmp_path,
        [
            {"file": "area.geojson", "min_resolution": 1.0, "max_resolution": 1000},
            {"sql": SQL, "connection": "host=db port=5433 dbname=osm user=osm"},
        ],
    )
    assert config.layers["osm"].geoms == (
        LayerGeom(file=tmp_path / "area.geojson", min_resolution=1.0, max_resolution=1000.0),
        LayerGeom(sql=SQL, connection="host=db port=5433 dbname=osm user=osm"),
    )


def test_no_geoms_means_the_whole_bbox(tmp_path: Path) -> None:
    data = base(tmp_path, None)
    del data["layers"]["osm"]["geoms"]
    assert parse_config(data, base_dir=tmp_path).layers["osm"].geoms == ()
    assert parse(tmp_path, []).layers["osm"].geoms == ()


def test_the_connection_defaults_to_postgresql_connection_then_to_libpq(tmp_path: Path) -> None:
    # "" lets libpq take the PG* environment variables (PGHOST, PGDATABASE...).
    assert parse(tmp_path, [{"sql": SQL}]).layers["osm"].geoms[0].connection == ""
    config = parse(tmp_path, [{"sql": SQL}], postgresql={"connection": "dbname=osm"})
    assert config.postgresql.connection == "dbname=osm"
    assert config.layers["osm"].geoms[0].connection == "dbname=osm"
    own = parse(tmp_path, [{"sql": SQL, "connection": "dbname=gis"}],
                postgresql={"connection": "dbname=osm"})  # fmt: skip
    assert own.layers["osm"].geoms[0].connection == "dbname=gis"


def test_geoms_in_layer_default_apply_to_every_layer(tmp_path: Path) -> None:
    data = base(tmp_path, None)
    del data["layers"]["osm"]["geoms"]
    data["layer_default"]["geoms"] = [{"file": "area.geojson"}]
    data["layers"]["other"] = {}
    layers = parse_config(data, base_dir=tmp_path).layers
    expected = (LayerGeom(file=tmp_path / "area.geojson"),)
    assert layers["osm"].geoms == layers["other"].geoms == expected


def test_loading_neither_reads_the_files_nor_runs_the_queries(tmp_path: Path) -> None:
    """A file that is not a geometry, a database that does not answer: the generation
    reports them, with the entry's path; the server, which does not use geoms, starts."""
    (tmp_path / "broken.geojson").write_text("not a geometry")
    config = parse(
        tmp_path,
        [{"file": "broken.geojson"}, {"sql": SQL, "connection": "host=127.0.0.1 port=1"}],
    )
    assert len(config.layers["osm"].geoms) == 2


# --- mistakes -------------------------------------------------------------------------------

MISTAKES: list[tuple[str, Any, str]] = [
    ("not a list", {"file": "area.geojson"},
     "layers.osm.geoms: expected a list of {file: ...} or {sql: ...}, got a mapping"),
    ("an entry not a mapping", ["area.geojson"],
     "layers.osm.geoms[0]: expected a mapping, got str 'area.geojson'"),
    ("neither file nor sql", [{"min_resolution": 1}],
     "layers.osm.geoms[0]: needs exactly one of 'file' and 'sql', none given"),
    ("both file and sql", [{"file": "area.geojson", "sql": SQL}],
     "layers.osm.geoms[0]: needs exactly one of 'file' and 'sql', not both"),
    ("unknown key", [{"sql": SQL, "min_res": 1}],
     "layers.osm.geoms[0].min_res: unknown key; did you mean 'min_resolution'? (allowed: "
     "connection, file, max_resolution, min_resolution, sql)"),
    ("resolution not a number", [{"sql": SQL, "max_resolution": "big"}],
     "layers.osm.geoms[0].max_resolution: expected a number, got str 'big'"),
    ("resolution not positive", [{"sql": SQL, "min_resolution": 0}],
     "layers.osm.geoms[0].min_resolution: must be greater than 0, got 0"),
    ("min above max", [{"sql": SQL, "min_resolution": 100, "max_resolution": 10}],
     "layers.osm.geoms[0].min_resolution: 100 is above max_resolution 10"),
    ("no level in the range", [{"sql": SQL, "min_resolution": 200000}],
     "layers.osm.geoms[0]: no level of grid 'epsg3857' has a resolution between "
     "min_resolution and max_resolution"),
    ("missing file", [{"file": "missing.geojson"}],
     "layers.osm.geoms[0].file: cannot read geometry file '{tmp}/missing.geojson': no such file"),
    ("file is a folder", [{"file": "."}],
     "layers.osm.geoms[0].file: cannot read geometry file '{tmp}': not a readable file"),
    ("file not a string", [{"file": ["a"]}],
     "layers.osm.geoms[0].file: expected a string, got a list"),
    ("connection of a file", [{"file": "area.geojson", "connection": "dbname=osm"}],
     "layers.osm.geoms[0].connection: only for an 'sql' entry"),
    ("empty sql", [{"sql": "  "}], "layers.osm.geoms[0].sql: is empty"),
    ("sql with its SELECT", [{"sql": "SELECT " + SQL}],
     "layers.osm.geoms[0].sql: write it without the leading SELECT, e.g. 'way AS geom FROM ...'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("geoms", "expected"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_each_mistake_names_its_path(tmp_path: Path, geoms: Any, expected: str) -> None:
    assert messages_of(tmp_path, geoms) == [expected.replace("{tmp}", str(tmp_path))]


def test_every_entry_is_checked_and_every_mistake_reported_at_once(tmp_path: Path) -> None:
    geoms = [
        {"file": "area.geojson"},
        {"sql": SQL, "min_resolution": "1"},
        {"file": "missing.geojson", "sql": SQL},
        {"sql": SQL, "max_resolution": 10},
    ]
    assert [m.partition(": ")[0] for m in messages_of(tmp_path, geoms)] == [
        "layers.osm.geoms[1].min_resolution",
        "layers.osm.geoms[2]",
        "layers.osm.geoms[2].file",
    ]


def test_a_mistake_in_layer_default_says_so(tmp_path: Path) -> None:
    data = base(tmp_path, None)
    del data["layers"]["osm"]["geoms"]
    data["layer_default"]["geoms"] = [{"sql": SQL, "file": "area.geojson"}, {"sql": SQL, "x": 1}]
    assert parse_config_messages(data, tmp_path) == [
        "layers.osm.geoms[0]: needs exactly one of 'file' and 'sql', not both "
        "(set in layer_default)",
        "layers.osm.geoms[1].x: unknown key (allowed: connection, file, max_resolution, "
        "min_resolution, sql) (set in layer_default)",
    ]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"connection": ["a"]}, "postgresql.connection: expected a string, got a list"),
        ({"conection": "dbname=osm"}, "postgresql.conection: unknown key; did you mean "
                                      "'connection'? (allowed: connection)"),
        ("dbname=osm", "postgresql: expected a mapping, got str 'dbname=osm'"),
    ],
)  # fmt: skip
def test_postgresql_section_mistakes(tmp_path: Path, section: Any, expected: str) -> None:
    assert messages_of(tmp_path, [{"sql": SQL}], postgresql=section) == [expected]


# --- entries level by level -----------------------------------------------------------------


def test_each_level_gets_the_union_of_the_entries_that_apply_there() -> None:
    coarse, fine = shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)
    everywhere = shapely.box(0, 20, 10, 30)
    geoms = [
        (LayerGeom(sql="a", min_resolution=RESOLUTIONS[12]), coarse),  # levels 0-12
        (LayerGeom(sql="b", max_resolution=RESOLUTIONS[14]), fine),  # levels 14-18
        (LayerGeom(sql="c", min_resolution=RESOLUTIONS[16], max_resolution=RESOLUTIONS[16]),
         everywhere),
    ]  # fmt: skip
    areas = level_geometries(RESOLUTIONS, range(10, 18), geoms)
    assert sorted(areas) == [10, 11, 12, 14, 15, 16, 17]  # level 13: only the bbox limits it
    assert areas[10] is areas[12] is coarse
    assert areas[14] is fine
    assert areas[16].equals(shapely.union_all([fine, everywhere]))
    assert areas[17] is fine


def test_px_buffer_grows_each_levels_area_by_that_many_of_its_pixels() -> None:
    """TileCloud-chain's px_buffer: the tiles within px_buffer pixels of the geometries
    are generated too, at every level."""
    point = shapely.Point(1000, 1000)
    geoms = [(LayerGeom(sql="a"), point)]
    areas = level_geometries(RESOLUTIONS, [10, 12], geoms, px_buffer=100)
    for z in (10, 12):
        radius = 100 * RESOLUTIONS[z]
        minx, miny, maxx, maxy = areas[z].bounds
        assert (minx, miny, maxx, maxy) == pytest.approx(
            (1000 - radius, 1000 - radius, 1000 + radius, 1000 + radius)
        )
    assert areas[10].area > areas[12].area * 15  # 4x the resolution, 16x the surface
    assert level_geometries(RESOLUTIONS, [10], geoms)[10] is point  # none: as it is


def test_resolution_bounds_are_inclusive() -> None:
    geom = LayerGeom(sql="a", min_resolution=2.0, max_resolution=4.0)
    assert [geom.applies_to(r) for r in (1.99, 2.0, 3.0, 4.0, 4.01)] == [
        False, True, True, True, False,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "gist"),
    [
        ("POLYGON ((0 0, 1 0, 1 1, 0 0))", None),
        ('{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}', None),
        ('{"type": "FeatureCollection", "features": []}', "the geometry is empty"),
        ("not a geometry", "not a GeoJSON or WKT geometry"),
        ('{"type": "Feature"}', "not a GeoJSON or WKT geometry"),
    ],
)
def test_parse_geometry(text: str, gist: str | None) -> None:
    if gist is None:
        assert not parse_geometry(text.encode()).is_empty
    else:
        with pytest.raises(ValueError, match=gist):
            parse_geometry(text.encode())
