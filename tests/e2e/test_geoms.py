"""A layer's `geoms` limit `generate_tiles` with a real PostGIS and the real Mapnik
renderer: only the metatiles that intersect them are rendered and only the tiles that
intersect them written, level by level (min/max_resolution); an explicit --geom is
intersected with them, a --tiles list is not filtered; a database that does not answer,
a failing query or a file that is not a geometry stop the run naming the entry."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from shapely import Polygon
from shapely import box as shapely_box
from shapely.geometry.base import BaseGeometry

from tests.support.postgis import PostGIS
from tests.support.server import demo_config

pytestmark = pytest.mark.e2e

MERC = 20037508.342789244
OSM_BBOX = (824000.0, 5421800.0, 829500.0, 5428000.0)  # layers.osm.bbox of the demo
PREFIX = "1.0.0/osm/default/epsg3857"
RESOLUTION = {z: 156543.03392804097 / 2**z for z in range(21)}
PROG = "tileserver generate"
SUMMARY = re.compile(r"^generated: (\d+) metatiles, (\d+) tiles written", re.MULTILINE)

# The polygons of the test table, in EPSG:3857: the port of Monaco and Fontvieille.
PORT = Polygon([(826300, 5425000), (826900, 5425100), (826500, 5425600)])
FONTVIEILLE = shapely_box(825300, 5424300, 825700, 5424600)
PORT_SQL = "way AS geom FROM areas WHERE kind = 'harbour'"
FONTVIEILLE_SQL = "way AS geom FROM areas WHERE name = 'Fontvieille'"


@pytest.fixture(scope="module")
def postgis() -> Iterator[PostGIS]:
    """One PostGIS for the module, with a table of two polygons (SRID 3857)."""
    database = PostGIS()
    database.start()
    try:
        database.execute(
            "CREATE TABLE areas (id serial PRIMARY KEY, name text, kind text, "
            "way geometry(Geometry, 3857))",
            f"INSERT INTO areas (name, kind, way) VALUES "
            f"('Port Hercule', 'harbour', ST_GeomFromText('{PORT.wkt}', 3857)), "
            f"('Fontvieille', 'district', ST_GeomFromText('{FONTVIEILLE.wkt}', 3857)), "
            f"('nowhere', 'district', NULL)",
        )
        yield database
    finally:
        database.stop()


# --- helpers -------------------------------------------------------------------------------


def write_config(workdir: Path, geoms: list[dict[str, Any]], **top: Any) -> Path:
    """The demo configuration with layer osm limited by geoms, stored in workdir/tiles."""
    data = demo_config(None, osm={"cache": "tiles", "geoms": geoms})
    data["caches"] = {"tiles": {"type": "filesystem", "folder": str(workdir / "tiles")}}
    data.update(top)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tileserver", "generate", "--config", str(config),
         "--layer", "osm", *args],
        cwd=config.parent, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def stored(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def expected_tiles(areas: dict[int, BaseGeometry | None]) -> set[str]:
    """Store paths of the tiles of each level that intersect the layer's bbox and the
    level's area (None: the bbox alone), by grid arithmetic and shapely."""
    minx, miny, maxx, maxy = OSM_BBOX
    paths = set()
    for z, area in areas.items():
        span = 2 * MERC / 2**z
        cols = range(math.floor((minx + MERC) / span), math.floor((maxx + MERC) / span) + 1)
        rows = range(math.floor((MERC - maxy) / span), math.floor((MERC - miny) / span) + 1)
        for row in rows:
            for col in cols:
                left, top = -MERC + col * span, MERC - row * span
                tile = shapely_box(left, top - span, left + span, top)
                if area is None or tile.intersects(area):
                    paths.add(f"{PREFIX}/{z}/{row}/{col}.png")
    return paths


def metatiles_of(paths: Iterable[str]) -> set[tuple[int, int, int]]:
    """The 8x8 metatiles holding the tiles of paths."""
    return {
        (int(z), int(row) // 8, int(col.removesuffix(".png")) // 8)
        for z, row, col in (p.split("/")[-3:] for p in paths)
    }


def generated(result: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """(metatiles, tiles written) of a run's summary."""
    match = SUMMARY.search(result.stdout)
    assert match is not None, result.stdout + result.stderr
    return int(match.group(1)), int(match.group(2))


def dry_run_total(result: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    assert result.returncode == 0, result.stderr
    match = re.search(r"^total: (\d+) metatiles, (\d+) tiles$", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    return int(match.group(1)), int(match.group(2))


def write_geojson(path: Path, geometry: BaseGeometry) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    feature = {"type": "Feature", "properties": {}, "geometry": geometry.__geo_interface__}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


# --- generation ----------------------------------------------------------------------------


def test_sql_geoms_limit_generation_to_the_tiles_that_intersect_them(
    tmp_path: Path, postgis: PostGIS
) -> None:
    # The connection comes from `postgresql.connection`.
    config = write_config(
        tmp_path, [{"sql": PORT_SQL}], postgresql={"connection": postgis.connection}
    )
    result = run(config, "--zoom", "15-16", "--processes", "2")
    assert result.returncode == 0, result.stderr
    expected = expected_tiles({15: PORT, 16: PORT})
    assert stored(tmp_path / "tiles") == expected
    all_tiles = expected_tiles({15: None, 16: None})
    assert len(expected) < len(all_tiles) / 4
    assert generated(result) == (len(metatiles_of(expected)), len(expected))
    assert "layers.osm.geoms[0]: the query limits levels 15-16" in result.stderr


def test_file_and_sql_geoms_apply_level_by_level(tmp_path: Path, postgis: PostGIS) -> None:
    write_geojson(tmp_path / "geoms" / "port.geojson", PORT)
    geoms = [
        # Levels 14 and 15 (resolutions 9.55 and 4.78): the port, from a file.
        {"file": "geoms/port.geojson", "min_resolution": 4, "max_resolution": 10},
        # Level 16 (2.39) and finer: Fontvieille, from the database.
        {"sql": FONTVIEILLE_SQL, "connection": postgis.connection, "max_resolution": 4},
    ]
    config = write_config(tmp_path, geoms)
    result = run(config, "--zoom", "13-16", "--processes", "2")
    assert result.returncode == 0, result.stderr
    # Level 13 (19.1): no entry applies, the layer's bbox alone limits it (TileCloud-chain).
    areas: dict[int, BaseGeometry | None] = {13: None, 14: PORT, 15: PORT, 16: FONTVIEILLE}
    expected = expected_tiles(areas)
    files = stored(tmp_path / "tiles")
    assert files == expected
    assert {p for p in files if "/16/" in p} == expected_tiles({16: FONTVIEILLE})
    assert generated(result) == (len(metatiles_of(expected)), len(expected))


def test_explicit_selections_with_geoms(tmp_path: Path, postgis: PostGIS, closed_port: int) -> None:
    write_geojson(tmp_path / "fontvieille.geojson", FONTVIEILLE)
    config = write_config(
        tmp_path,
        [{"sql": PORT_SQL, "min_resolution": RESOLUTION[16]},
         {"file": "fontvieille.geojson", "max_resolution": RESOLUTION[17]}],
        postgresql={"connection": postgis.connection},
    )  # fmt: skip

    # --geom is intersected with the geoms of each level: the west half of the port at
    # level 16, nothing at level 17 (Fontvieille only).
    west = shapely_box(826000, 5424000, 826550, 5426000)
    area = write_geojson(tmp_path / "west.geojson", west)
    dry = run(config, "--zoom", "16-17", "--geom", str(area), "--dry-run")
    expected = expected_tiles({16: PORT.intersection(west)})
    assert expected and expected != expected_tiles({16: PORT})
    assert dry_run_total(dry) == (len(metatiles_of(expected)), len(expected))
    assert "  zoom 17: 0 metatiles, 0 tiles" in dry.stdout

    # --bbox too.
    bbox = (825000, 5424000, 825500, 5425000)
    dry = run(config, "--zoom", "17", "--bbox", ",".join(map(str, bbox)), "--dry-run")
    expected = expected_tiles({17: FONTVIEILLE.intersection(shapely_box(*bbox))})
    assert dry_run_total(dry) == (len(metatiles_of(expected)), len(expected))

    # A query that selects nothing: a warning, and nothing at the levels it applies to.
    nothing = {"sql": "way AS geom FROM areas WHERE false", "connection": postgis.connection}
    empty = write_config(tmp_path, [nothing])
    dry = run(empty, "--zoom", "15", "--dry-run")
    assert dry_run_total(dry) == (0, 0)
    assert "layers.osm.geoms[0]: the query returned no geometry" in dry.stderr

    # --tiles replays its list unfiltered: the query is not even run (the database here
    # does not answer), and a tile far from the geometries is generated.
    down = {"sql": PORT_SQL, "connection": f"host=127.0.0.1 port={closed_port}"}
    unreachable = write_config(tmp_path, [down])
    listed = tmp_path / "expired.txt"
    listed.write_text("16/34123/23892\n")  # z/x/y: the north-east of Monaco, not the port
    dry = run(unreachable, "--tiles", str(listed), "--dry-run")
    assert dry_run_total(dry)[0] == 1
    assert "geoms" not in dry.stderr


# --- errors --------------------------------------------------------------------------------


def test_unreachable_database_bad_sql_and_bad_file_stop_the_run_naming_the_entry(
    tmp_path: Path, postgis: PostGIS, closed_port: int
) -> None:
    port = closed_port
    down = write_config(tmp_path, [{"sql": PORT_SQL, "connection": f"host=127.0.0.1 port={port}"}])
    result = run(down, "--zoom", "15")
    assert result.returncode == 1
    assert result.stderr.startswith(f"{PROG}: layers.osm.geoms[0]: cannot connect to PostgreSQL")
    assert f'connection to server at "127.0.0.1", port {port} failed' in result.stderr
    assert "Connection refused" in result.stderr
    assert not (tmp_path / "tiles").exists()

    bad_sql = write_config(tmp_path, [{"sql": "way AS geom FROM nope",
                                       "connection": postgis.connection}])  # fmt: skip
    result = run(bad_sql, "--zoom", "15")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'{PROG}: layers.osm.geoms[0]: the query failed: relation "nope" does not exist; '
        "SQL: SELECT ST_AsBinary(geom) FROM (SELECT way AS geom FROM nope) AS g"
    )

    (tmp_path / "broken.geojson").write_text('{"type": "Polygon"}')
    bad_file = write_config(tmp_path, [{"sql": PORT_SQL, "connection": postgis.connection},
                                       {"file": "broken.geojson"}])  # fmt: skip
    result = run(bad_file, "--zoom", "15", "--dry-run")
    assert result.returncode == 1
    assert re.search(
        r"^tileserver generate: layers\.osm\.geoms\[1\]: \S+broken\.geojson: not a GeoJSON or WKT "
        r"geometry",
        result.stderr,
        re.MULTILINE,
    ), result.stderr

    # Coordinates in another CRS than the grid's: they miss the layer's bbox.
    write_geojson(tmp_path / "lonlat.geojson", shapely_box(7.41, 43.72, 7.43, 43.74))
    lonlat = write_config(tmp_path, [{"file": "lonlat.geojson"}])
    result = run(lonlat, "--zoom", "15", "--dry-run")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{PROG}: layers.osm.geoms[0]: the geometry does not reach layer 'osm''s bbox "
        "824000,5421800,829500,5428000: its coordinates must be in the grid's CRS, EPSG:3857"
    )

    # The configuration itself is checked when it is loaded, before any query.
    missing = write_config(tmp_path, [{"file": "missing.geojson", "sql": PORT_SQL}])
    result = run(missing, "--zoom", "15")
    assert result.returncode == 1
    assert "layers.osm.geoms[0]: needs exactly one of 'file' and 'sql', not both" in result.stderr
