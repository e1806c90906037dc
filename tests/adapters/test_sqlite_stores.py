"""MBTiles and GeoPackage stores beyond the shared contract: the files' metadata per the
specs, many processes at once, atomic transactions, clear refusals and outages."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.contract.test_tile_store_contract import GRIDS, web_mercator
from tileserver.adapters.geopackage_store import APPLICATION_ID, GeoPackageStore
from tileserver.adapters.mbtiles_store import MBTilesStore
from tileserver.errors import StoreOutage, StoreUnavailable
from tileserver.grid import Grid
from tileserver.store_layout import tile_path
from tileserver.types import BBox

SWISS = Grid(
    name="epsg2056",
    srs="EPSG:2056",
    bbox=BBox(2420000, 830000, 2900000, 1350000),
    resolutions=(4000, 3750, 3500, 250, 100, 10, 0.5),
)
ROOT = Path(__file__).resolve().parents[2]


def path(z: int, row: int, col: int, layer: str = "osm", grid: str = "epsg3857") -> str:
    return tile_path("", layer, "default", (), grid, str(z), row, col, "png")


async def test_mbtiles_rows_count_from_the_bottom_and_metadata_follows_the_spec(
    tmp_path: Path,
) -> None:
    store = MBTilesStore(tmp_path, grids=GRIDS)
    await store.open()
    try:
        await store.put_many({path(3, 0, 2): b"top", path(3, 7, 5): b"bottom"}, "image/png")
        await store.put_many({path(5, 1, 1): b"z5"}, "image/png")
        await store.delete_many([path(5, 1, 1)])
    finally:
        await store.close()
    file = tmp_path / "1.0.0/osm/default/epsg3857.png.mbtiles"
    with sqlite3.connect(file) as conn:
        rows = set(conn.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"))
        metadata = dict(conn.execute("SELECT name, value FROM metadata"))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert rows == {(3, 2, 7, b"top"), (3, 5, 0, b"bottom")}  # TMS: row 0 is the bottom
    assert metadata["name"] == "osm"
    assert metadata["format"] == "png"
    assert metadata["minzoom"] == metadata["maxzoom"] == "3"  # level 5 is gone again
    assert [float(v) for v in metadata["bounds"].split(",")] == pytest.approx(
        [-180, -85.0511287798066, 180, 85.0511287798066]
    )


async def test_a_grid_starting_below_zoom_0_maps_to_web_mercator_zooms(tmp_path: Path) -> None:
    """A grid whose first level is Web Mercator's zoom 2 stores its level 0 at zoom 2."""
    full = web_mercator()
    grid = Grid("from2", "EPSG:3857", full.bbox, full.resolutions[2:])
    store = MBTilesStore(tmp_path / "one.mbtiles", grids={"from2": grid}, single_file=True,
                         bound="1.0.0/osm/default/from2.png")  # fmt: skip
    await store.open()
    try:
        await store.put_many({path(0, 3, 1, grid="from2"): b"x"}, "image/png")
        assert await store.get(path(0, 3, 1, grid="from2")) == b"x"
        assert [p async for p in store.list_paths("")] == [path(0, 3, 1, grid="from2")]
        # A single file holds the tileset it is bound to, nothing else.
        with pytest.raises(ValueError, match="not the file's tileset"):
            await store.put_many({path(0, 0, 0, layer="other", grid="from2"): b"y"}, "image/png")
        assert await store.get(path(0, 0, 0, layer="other", grid="from2")) is None
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "one.mbtiles") as conn:
        assert list(conn.execute("SELECT zoom_level, tile_column, tile_row FROM tiles")) == [
            (2, 1, 0)
        ]


def tilecloud_chain_file(file: Path, tiles: dict[tuple[int, int, int], bytes]) -> None:
    """An MBTiles file as TileCloud-chain writes one (tilecloud's MBTilesTileStore with
    tilecoord_in_topleft): its two tables, keyed by (zoom_level, tile_column, tile_row),
    rows counted from the top, the grid's level as zoom_level, no metadata."""
    file.parent.mkdir(parents=True, exist_ok=True)
    rows = [(z, col, row, data) for (z, row, col), data in tiles.items()]
    with sqlite3.connect(file) as conn:
        conn.execute("CREATE TABLE metadata (name text, value text, PRIMARY KEY (name))")
        conn.execute(
            "CREATE TABLE tiles (zoom_level integer, tile_column integer, tile_row integer, "
            "tile_data blob, PRIMARY KEY (zoom_level, tile_column, tile_row))"
        )
        conn.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", rows)
    conn.close()


async def test_a_tilecloud_chain_file_is_read_and_written_in_its_layout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TileCloud-chain user's MBTiles files, under the names TileCloud-chain gives them,
    serve the same map: the same tile at the same WMTS row and column."""
    full = web_mercator()
    grids = {**GRIDS, "from2": Grid("from2", "EPSG:3857", full.bbox, full.resolutions[2:])}
    file = tmp_path / "1.0.0/osm/default/epsg3857.png.mbtiles"
    tilecloud_chain_file(file, {(3, 0, 2): b"top", (3, 7, 5): b"bottom"})
    from2 = tmp_path / "1.0.0/osm/default/from2.png.mbtiles"
    tilecloud_chain_file(from2, {(0, 3, 1): b"level 0"})  # the grid's level, not zoom 2
    store = MBTilesStore(tmp_path, grids=grids)
    await store.open()
    try:
        assert await store.get(path(3, 0, 2)) == b"top"
        assert await store.get(path(3, 7, 5)) == b"bottom"
        assert await store.get(path(3, 7, 2)) is None
        assert await store.get(path(0, 3, 1, grid="from2")) == b"level 0"
        assert sorted([p async for p in store.list_paths("")]) == sorted(
            [path(3, 0, 2), path(3, 7, 5), path(0, 3, 1, grid="from2")]
        )
        await store.put_many({path(3, 1, 4): b"new"}, "image/png")
        await store.delete_many([path(3, 7, 5)])
        assert await store.get(path(3, 1, 4)) == b"new"
    finally:
        await store.close()
    with sqlite3.connect(file) as conn:
        rows = set(conn.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"))
        assert rows == {(3, 2, 0, b"top"), (3, 4, 1, b"new")}  # still rows from the top
        assert list(conn.execute("SELECT * FROM metadata")) == []  # left as it was
    conn.close()
    assert "without metadata, as TileCloud-chain writes them" in caplog.text


async def test_mbtiles_refuses_a_grid_that_is_not_web_mercator(tmp_path: Path) -> None:
    store = MBTilesStore(tmp_path, grids={"epsg2056": SWISS})
    await store.open()
    try:
        with pytest.raises(ValueError, match="not the Web Mercator quadtree"):
            await store.put_many({path(3, 0, 0, grid="epsg2056"): b"x"}, "image/png")
        assert await store.get(path(3, 0, 0, grid="epsg2056")) is None
    finally:
        await store.close()
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240


async def test_geopackage_tables_describe_the_swiss_grid(tmp_path: Path) -> None:
    file = tmp_path / "tiles.gpkg"
    store = GeoPackageStore(file, grids={"epsg2056": SWISS, **GRIDS}, single_file=True)
    await store.open()
    try:
        await store.put_many({path(6, 2, 3, grid="epsg2056"): b"ch"}, "image/png")
        await store.put_many({path(4, 1, 1): b"wm"}, "image/png")
        assert await store.get(path(6, 2, 3, grid="epsg2056")) == b"ch"
    finally:
        await store.close()
    with sqlite3.connect(file) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 10300
        contents = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT table_name, data_type, min_x, min_y, max_x, max_y, srs_id "
                "FROM gpkg_contents"
            )
        }
        assert contents == {
            "osm_default_epsg2056": ("tiles", 2420000, 830000, 2900000, 1350000, 2056),
            "osm_default_epsg3857": ("tiles", *GRIDS["epsg3857"].bbox.as_tuple(), 3857),
        }
        srs = dict(
            conn.execute("SELECT srs_id, organization_coordsys_id FROM gpkg_spatial_ref_sys")
        )
        assert srs == {-1: -1, 0: 0, 4326: 4326, 2056: 2056, 3857: 3857}
        assert conn.execute(
            "SELECT srs_id, min_x, min_y, max_x, max_y FROM gpkg_tile_matrix_set "
            "WHERE table_name = 'osm_default_epsg2056'"
        ).fetchone() == (2056, 2420000, 830000, 2900000, 1350000)
        matrices = list(conn.execute(
            "SELECT zoom_level, matrix_width, matrix_height, tile_width, pixel_x_size, "
            "pixel_y_size FROM gpkg_tile_matrix WHERE table_name = 'osm_default_epsg2056' "
            "ORDER BY zoom_level"
        ))  # fmt: skip
        assert matrices[0] == (0, 1, 1, 256, 4000, 4000)
        assert matrices[6] == (6, 3750, 4063, 256, 0.5, 0.5)
        assert len(matrices) == len(SWISS.resolutions)
        # Levels that do not halve need the zoom-other extension; Web Mercator's do not.
        extensions = list(conn.execute("SELECT table_name, extension_name FROM gpkg_extensions"))
        assert extensions == [("osm_default_epsg2056", "gpkg_zoom_other")]
        # Rows count from the top, as in WMTS.
        assert list(conn.execute(
            "SELECT zoom_level, tile_column, tile_row FROM osm_default_epsg2056"
        )) == [(6, 3, 2)]  # fmt: skip
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_a_tile_outside_its_matrix_is_no_tile(tmp_path: Path) -> None:
    store = GeoPackageStore(tmp_path / "t.gpkg", grids=GRIDS, single_file=True)
    await store.open()
    try:
        with pytest.raises(ValueError):
            await store.put_many({path(2, 4, 0): b"x"}, "image/png")  # zoom 2 has 4 rows
        assert await store.get(path(2, 4, 0)) is None
        assert await store.get(path(99, 0, 0)) is None  # no such matrix
        with pytest.raises(ValueError, match="holds tiles only"):
            await store.put_many({"1.0.0/WMTSCapabilities.xml": b"<x/>"}, "application/xml")
    finally:
        await store.close()


# --- many processes ----------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from tests.contract.test_tile_store_contract import GRIDS
    from tileserver.adapters.{module} import {cls}
    from tileserver.store_layout import tile_path

    def path(i):
        return tile_path("", "osm", "default", (), "epsg3857", "8", i // 16, i % 16, "png")

    async def main(role, location, rounds):
        store = {cls}(location, grids=GRIDS, single_file=location.endswith(".gpkg"))
        await store.open()
        seen, versions = 0, set()
        try:
            if role.startswith("reader"):  # until the writers are done, then one more round
                print("ready", flush=True)
                last = False
                while not last:
                    last = os.path.exists(location + ".stop")
                    seen = 0  # tiles found in this round
                    for i in range(64):
                        data = await store.get(path(i))
                        if data is not None:
                            assert len(set(data)) == 1 and len(data) == 5000, "a partial tile"
                            seen += 1
                            versions.add(data[0])
                    if len(versions) >= 2:  # it read across the writers' transactions
                        open(location + "." + role, "w").close()
                    # A breath between rounds: three readers spinning would starve the
                    # writers (and the rest of a busy machine) of CPU; each still reads
                    # across many of the writers' transactions.
                    await asyncio.sleep(0.01)
            else:
                # At least `rounds` transactions, and on until every reader has read two
                # versions: on a busy machine the readers may get the cores late.
                r = 0
                while r < rounds or not all(
                    os.path.exists(location + f".reader{{n}}") for n in range(3)
                ):
                    version = bytes([int(role[-1]) * 50 + r % 50]) * 5000
                    await store.put_many({{path(i): version for i in range(64)}}, "image/png")
                    r += 1
        finally:
            await store.close()
        print("done", len(versions), seen, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def _child(module: str, cls: str, role: str, location: Path, rounds: int) -> subprocess.Popen[str]:
    code = _CHILD.format(module=module, cls=cls)
    return subprocess.Popen(
        [sys.executable, "-c", code, role, str(location), str(rounds)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("module", "cls", "name"),
    [("mbtiles_store", "MBTilesStore", "m"), ("geopackage_store", "GeoPackageStore", "t.gpkg")],
)
async def test_readers_and_two_writers_in_other_processes_never_see_a_lock_error(
    tmp_path: Path, module: str, cls: str, name: str
) -> None:
    location = tmp_path / name
    readers = [_child(module, cls, f"reader{n}", location, 0) for n in range(3)]
    for reader in readers:  # started before any file exists: they find it once written
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
    writers = [_child(module, cls, f"writer{n}", location, 60) for n in (1, 2)]
    results = [await asyncio.to_thread(p.communicate, timeout=240) for p in writers]
    Path(f"{location}.stop").touch()  # noqa: ASYNC240
    results += [await asyncio.to_thread(p.communicate, timeout=240) for p in readers]
    for proc, (_, err) in zip(writers + readers, results, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
    for out, _ in results[2:]:
        assert int(out.split()[-1]) == 64  # each reader's last round saw every tile
    # Each reader read while the writers wrote (the writers wrote until it had): it saw
    # several versions, each tile whole.
    assert all(int(out.split()[-2]) >= 2 for out, _ in results[2:])
    mbtiles = location / "1.0.0/osm/default/epsg3857.png.mbtiles"
    file = location if name.endswith(".gpkg") else mbtiles
    with sqlite3.connect(file) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        table = "tiles" if name == "m" else "osm_default_epsg3857"
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 64
        # Each write was one transaction: the last one's 64 tiles are all of one version.
        assert conn.execute(f"SELECT COUNT(DISTINCT tile_data) FROM {table}").fetchone()[0] == 1


# --- failures -------------------------------------------------------------------------------


async def test_a_file_that_is_not_a_database_is_an_outage(tmp_path: Path) -> None:
    file = tmp_path / "t.gpkg"
    file.write_bytes(b"not a database, " * 100)
    store = GeoPackageStore(file, grids=GRIDS, single_file=True)
    await store.open()
    try:
        with pytest.raises(StoreOutage, match="not a database"):
            await store.put_many({path(3, 0, 0): b"x"}, "image/png")
        with pytest.raises(StoreUnavailable):
            await store.get(path(3, 0, 0))
    finally:
        await store.close()
