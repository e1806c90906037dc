"""MBTiles, GeoPackage and PMTiles end to end: `generate_tiles` writes Monaco into them,
GDAL (Debian's gdal-bin) reads every level back with the right georeferencing, a killed
run leaves a valid file and resumes, and the server serves the tiles from each store."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from tests.support.daemons import find_binary
from tests.support.images import differing, same_tile
from tests.support.mapserver import FOREIGN_DATA_DIRS
from tests.support.server import TileServer, demo_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OSM_ZOOMS = range(12, 18)
LV95_ZOOMS = range(17, 22)  # resolutions 100 to 5 m
MBTILES = "mb/1.0.0/osm/default/epsg3857.png.mbtiles"


def run_gdal(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One of Debian's GDAL tools, without the PROJ and GDAL data folders that `import
    mapnik` (by an earlier test of the same process) points the environment at: their
    proj.db is newer than Debian's PROJ reads, and every CRS would come out empty."""
    found = find_binary(tool, "gdal-bin")
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_DATA_DIRS}
    return subprocess.run([found, *args], capture_output=True, text=True, check=True,
                          timeout=300, env=env)  # fmt: skip


def write_config(workdir: Path, **osm: Any) -> Path:
    data = demo_config(None, osm={"cache": "mb", "min_resolution_seed": 1, **osm},
                       osm_lv95={"cache": "gp", "min_resolution_seed": 1})  # fmt: skip
    data["caches"] = {
        "mb": {"type": "mbtiles", "folder": str(workdir / "mb")},
        "gp": {"type": "geopackage", "file": str(workdir / "tiles.gpkg")},
        "pm": {"type": "pmtiles", "file": str(workdir / "osm.pmtiles")},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def generate(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tileserver", "generate", "--config", str(config), *args],
        cwd=config.parent, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def rows(file: Path, table: str) -> dict[tuple[int, int, int], bytes]:
    with sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True) as conn:
        query = f"SELECT zoom_level, tile_column, tile_row, tile_data FROM {table}"
        return {(z, c, r): bytes(d) for z, c, r, d in conn.execute(query)}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Monaco z12-17 in an MBTiles folder and a GeoPackage, and the LV95 layer in the same
    GeoPackage."""
    workdir = tmp_path_factory.mktemp("stores")
    config = write_config(workdir)
    zooms = f"{OSM_ZOOMS[0]}-{OSM_ZOOMS[-1]}"
    for args in (
        ("--layer", "osm", "--zoom", zooms, "--cache", "mb"),
        ("--layer", "osm", "--zoom", zooms, "--cache", "gp"),
        ("--layer", "osm_lv95", "--zoom", f"{LV95_ZOOMS[0]}-{LV95_ZOOMS[-1]}", "--cache", "gp"),
    ):
        result = generate(config, *args)
        assert result.returncode == 0, result.stderr
    return workdir


def gdal_level(
    source: str, z: int, workdir: Path, *options: str
) -> tuple[dict[str, Any], Image.Image]:
    """gdalinfo's JSON and the decoded raster of one level of a file."""
    opens = ["-oo", f"ZOOM_LEVEL={z}", *options]
    info = run_gdal("gdalinfo", "-json", *opens, source)
    out = workdir / f"level-{z}.png"
    run_gdal("gdal_translate", "-q", "-of", "PNG", *opens, source, str(out))
    with Image.open(out) as image:
        return json.loads(info.stdout), image.convert("RGBA")


def assert_tile_in_raster(
    image: Image.Image, transform: list[float], tile: bytes, tile_box: tuple[float, ...]
) -> None:
    """The pixels of a stored tile are those of GDAL's raster where the tile lies."""
    res = transform[1]
    x0 = round((tile_box[0] - transform[0]) / res)
    y0 = round((transform[3] - tile_box[3]) / res)
    with Image.open(io.BytesIO(tile)) as decoded:
        stored = decoded.convert("RGBA")
    # The part of the tile inside the raster (GDAL's extent is the layer's bbox).
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = min(256, image.width - x0), min(256, image.height - y0)
    assert right - left >= 16 and bottom - top >= 16, (x0, y0, image.size)
    window = (left, top, right, bottom)
    cropped = image.crop((x0 + left, y0 + top, x0 + right, y0 + bottom))
    assert cropped.tobytes() == stored.crop(window).tobytes()
    colours = image.getcolors(maxcolors=image.width * image.height)
    assert colours is not None and len(colours) > 10  # land, sea, roads: a real map


def test_gdal_reads_every_level_of_the_mbtiles_and_geopackage_files(
    generated: Path, tmp_path: Path
) -> None:
    from tileserver.grid import WEB_MERCATOR_HALF_WORLD

    half = WEB_MERCATOR_HALF_WORLD
    mbtiles = rows(generated / MBTILES, "tiles")
    geopackage = rows(generated / "tiles.gpkg", "osm_default_epsg3857")
    assert len(mbtiles) == len(geopackage) > 100
    for z in OSM_ZOOMS:
        n = 1 << z
        span = 2 * half / n
        level = {k: v for k, v in geopackage.items() if k[0] == z}
        assert level, f"no tile at level {z}"
        # The tile in the middle of the level, the same bytes in both files (TMS rows in MBTiles).
        (_, col, row), tile = sorted(level.items())[len(level) // 2]
        assert mbtiles[(z, col, n - 1 - row)] == tile
        box = (
            -half + col * span,
            half - (row + 1) * span,
            -half + (col + 1) * span,
            half - row * span,
        )
        for source, options in (
            (str(generated / MBTILES), ()),
            (str(generated / "tiles.gpkg"), ("-oo", "TABLE=osm_default_epsg3857")),
        ):
            info, image = gdal_level(source, z, tmp_path, *options)
            transform = info["geoTransform"]
            assert transform[1] == pytest.approx(span / 256, rel=1e-9)
            assert "3857" in info["coordinateSystem"]["wkt"]
            assert (image.width, image.height) == tuple(info["size"])
            assert_tile_in_raster(image, transform, tile, box)


def test_a_geopackage_on_the_swiss_grid_opens_in_gdal_with_its_georeferencing(
    generated: Path, tmp_path: Path
) -> None:
    table = "osm_lv95_default_epsg2056"
    tiles = rows(generated / "tiles.gpkg", table)
    resolutions = [100, 50, 20, 10, 5]  # levels 17 to 21 of the demo's LV95 grid
    for z, res in zip(LV95_ZOOMS, resolutions, strict=True):
        info, image = gdal_level(
            str(generated / "tiles.gpkg"), z, tmp_path, "-oo", f"TABLE={table}"
        )
        # The layer's bbox [2596500, 840000, 2601500, 845500] at the level's resolution.
        assert info["geoTransform"] == pytest.approx([2596500, res, 0, 845500, 0, -res])
        assert info["size"] == [round(5000 / res), round(5500 / res)]
        assert 'ID["EPSG",2056]' in info["coordinateSystem"]["wkt"]
        span = 256 * res  # the tile under the centre of the layer's bbox
        col, row = int((2599000 - 2420000) // span), int((1350000 - 842750) // span)
        tile = tiles[(z, col, row)]
        minx, maxy = 2420000 + col * span, 1350000 - row * span  # the grid's top-left origin
        assert_tile_in_raster(
            image, info["geoTransform"], tile, (minx, maxy - span, minx + span, maxy)
        )


# --- a killed run ------------------------------------------------------------------------


def count_tiles(file: Path) -> int:
    if not file.exists():
        return 0
    try:
        with sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the file exists, its tables not yet


def test_a_killed_generation_into_mbtiles_leaves_a_valid_file_and_resumes(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    zooms = ("--layer", "osm", "--zoom", "13-16", "--cache", "mb", "--processes", "1")
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()
    result = generate(write_config(reference_dir, meta_size=1), *zooms)
    assert result.returncode == 0, result.stderr
    reference = rows(reference_dir / MBTILES, "tiles")
    assert len(reference) > 100

    config = write_config(killed_dir, meta_size=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "tileserver", "generate", "--config", str(config), *zooms],
        cwd=killed_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    started.append(process)
    file = killed_dir / MBTILES

    def committed() -> bool:
        done = count_tiles(file) >= 20
        assert done or process.poll() is None, "the run ended before it could be killed"
        return done

    wait_until(committed, "20 tiles committed", 120, 0.005, detail=lambda: count_tiles(file))
    os.killpg(process.pid, signal.SIGKILL)  # the generation and its render processes
    process.communicate(timeout=30)
    with sqlite3.connect(file) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    partial = rows(file, "tiles")
    assert 20 <= len(partial) < len(reference)
    assert all(same_tile(data, reference[key]) for key, data in partial.items())

    again = generate(config, *zooms)
    assert again.returncode == 0, again.stderr
    assert "(resuming)" in again.stderr
    assert differing(rows(file, "tiles"), reference) == []
    with sqlite3.connect(file) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        metadata = dict(conn.execute("SELECT name, value FROM metadata"))
    assert (metadata["minzoom"], metadata["maxzoom"], metadata["format"]) == ("13", "16", "png")


# --- serving ----------------------------------------------------------------------------


@pytest.fixture
def serve(
    generated: Path, tileserver: Callable[..., TileServer]
) -> Iterator[Callable[[str], TileServer]]:
    def start(cache: str) -> TileServer:
        data = yaml.safe_load((generated / "config.yaml").read_text())
        data["layers"]["osm"]["cache"] = cache
        data["layers"]["osm"]["min_resolution_seed"] = 1
        data["layers"]["osm_lv95"]["cache"] = "gp"
        return tileserver(data)

    yield start


@pytest.mark.parametrize("cache", ["mb", "gp", "pm"])
def test_the_server_serves_the_tiles_of_each_store(
    generated: Path, serve: Callable[[str], TileServer], cache: str
) -> None:
    tiles = rows(generated / "tiles.gpkg", "osm_default_epsg3857")
    if cache == "pm" and not (generated / "osm.pmtiles").exists():
        export = subprocess.run(
            [sys.executable, "-m", "tileserver", "controller", "-c", str(generated / "config.yaml"),
             "--layer", "osm", "--cache", "gp", "--zoom", "12-17",
             "--export-pmtiles", str(generated / "osm.pmtiles")],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert export.returncode == 0, export.stderr
        assert f"wrote {len(tiles)} tiles" in export.stderr
    server = serve(cache)
    for (z, col, row), data in sorted(tiles.items())[:: max(1, len(tiles) // 12)]:
        response = server.get(f"/wmts/1.0.0/osm/default/epsg3857/{z}/{row}/{col}.png")
        assert response.status == 200, response.body[:300]
        assert response.headers["x-tile-source"] == "store"
        assert response.body == data  # the same bytes in every store
        with Image.open(io.BytesIO(response.body)) as image:
            assert image.size == (256, 256)
    # The Swiss layer from the GeoPackage, in the same server.
    swiss = rows(generated / "tiles.gpkg", "osm_lv95_default_epsg2056")
    (z, col, row), data = sorted(swiss.items())[len(swiss) // 2]
    response = server.get(f"/wmts/1.0.0/osm_lv95/default/epsg2056/{z}/{row}/{col}.png")
    assert (response.status, response.headers["x-tile-source"]) == (200, "store")
    assert response.body == data
