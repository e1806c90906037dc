"""Tile store in GeoPackage files (OGC 12-128r18, GeoPackage 1.3, "Tiles").

A GeoPackage holds any grid: each tileset (layer, style, dimension values, grid,
extension) is a tile pyramid user data table, with its `gpkg_contents` row (the
layer's bbox in the grid's CRS), its `gpkg_tile_matrix_set` (the grid's bbox, whose
top-left corner is the origin of the tiles) and one `gpkg_tile_matrix` row per level of
the grid. Tile rows count from the top, as in WMTS. A grid whose levels are not each
half the resolution of the one before (the Swiss LV95 grid) is declared with the
`gpkg_zoom_other` extension (Annex F.5). Where the levels do not divide the grid's bbox
(again the Swiss grid) each matrix covers it and overhangs right and at the bottom, as
the WMTS grid does; GDAL reads such files.

`tileserver_tilesets` maps each table to the tile paths it replaces
(`1.0.0/{layer}/{style}/[{dims}/]{grid}` and the extension). With `file`, one
GeoPackage holds every layer; with `folder`, one file per tileset, named like the MBTiles
files. See `sqlite_store` for the transactions and locking.
"""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
from pathlib import Path

from tileserver.adapters.sqlite_store import SqliteTileStore
from tileserver.crs import srs_definition
from tileserver.grid import Grid
from tileserver.store_layout import Tileset

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10300  # GeoPackage 1.3.0
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
    srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
    organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS gpkg_contents (
    table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
    description TEXT DEFAULT '', last_change DATETIME NOT NULL DEFAULT ({_NOW}),
    min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
    CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE IF NOT EXISTS gpkg_tile_matrix_set (
    table_name TEXT NOT NULL PRIMARY KEY, srs_id INTEGER NOT NULL,
    min_x DOUBLE NOT NULL, min_y DOUBLE NOT NULL, max_x DOUBLE NOT NULL, max_y DOUBLE NOT NULL,
    CONSTRAINT fk_gtms_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
    CONSTRAINT fk_gtms_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
CREATE TABLE IF NOT EXISTS gpkg_tile_matrix (
    table_name TEXT NOT NULL, zoom_level INTEGER NOT NULL, matrix_width INTEGER NOT NULL,
    matrix_height INTEGER NOT NULL, tile_width INTEGER NOT NULL, tile_height INTEGER NOT NULL,
    pixel_x_size DOUBLE NOT NULL, pixel_y_size DOUBLE NOT NULL,
    CONSTRAINT pk_ttm PRIMARY KEY (table_name, zoom_level),
    CONSTRAINT fk_tmm_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name));
CREATE TABLE IF NOT EXISTS gpkg_extensions (
    table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL, definition TEXT NOT NULL,
    scope TEXT NOT NULL, CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
CREATE TABLE IF NOT EXISTS tileserver_tilesets (
    table_name TEXT NOT NULL PRIMARY KEY, prefix TEXT NOT NULL, extension TEXT NOT NULL,
    UNIQUE (prefix, extension));
"""

# The three rows every GeoPackage has (12-128r18, requirements 11 to 13).
_REQUIRED_SRS = [
    ("Undefined cartesian SRS", -1, "NONE", -1, "undefined",
     "undefined cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined",
     "undefined geographic coordinate reference system"),
]  # fmt: skip
_ZOOM_OTHER = ("gpkg_zoom_other", "http://www.geopackage.org/spec/#extension_zoom_other")
_WEBP = ("gpkg_webp", "http://www.geopackage.org/spec/#extension_tiles_webp")


def table_name(tileset: Tileset) -> str:
    """A readable SQL name for a tileset: its layer, style, dimension values and grid."""
    parts = tileset.prefix.split("/")[1:]  # without the "1.0.0"
    name = re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))
    if not name[:1].isalpha() or name.lower().startswith(("gpkg_", "sqlite_", "rtree_")):
        name = "t_" + name
    return name


def zooms_halve(grid: Grid) -> bool:
    """True when each level has half the resolution of the one before (GeoPackage's default)."""
    resolutions = grid.resolutions
    return all(math.isclose(a / b, 2.0, rel_tol=1e-9) for a, b in itertools.pairwise(resolutions))


class GeoPackageStore(SqliteTileStore):
    """Tiles in GeoPackage files: every tileset in one `file`, or a file per tileset."""

    suffix = ".gpkg"
    kind = "GeoPackage"

    def unsupported(self, grid: Grid) -> str | None:
        try:
            srs_definition(grid.srs)
        except ValueError as exc:
            return f"grid {grid.name!r}: no GeoPackage spatial reference for {grid.srs}: {exc}"
        return None

    def to_row(
        self, file: Path, tileset: Tileset, z: int, row: int, col: int
    ) -> tuple[int, int, int]:
        return z, col, row

    def from_row(
        self, file: Path, tileset: Tileset, zoom_level: int, column: int, row: int
    ) -> tuple[int, int, int]:
        return zoom_level, row, column

    def create_schema(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
            return
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {USER_VERSION}")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)  # executescript would commit the transaction
        wgs84 = srs_definition("EPSG:4326")
        rows = [
            *_REQUIRED_SRS,
            (wgs84.name, 4326, "EPSG", 4326, wgs84.wkt,
             "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid"),
        ]  # fmt: skip
        conn.executemany(
            "INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", rows
        )

    def find_table(self, conn: sqlite3.Connection, tileset: Tileset) -> str | None:
        found = conn.execute(
            "SELECT table_name FROM tileserver_tilesets WHERE prefix = ? AND extension = ?",
            (tileset.prefix, tileset.extension),
        ).fetchone()
        return None if found is None else str(found[0])

    def create_table(self, conn: sqlite3.Connection, tileset: Tileset) -> str:
        grid = tileset.grid
        base = table_name(tileset)
        name, n = base, 1
        while conn.execute(
            "SELECT 1 FROM sqlite_master WHERE lower(name) = lower(?) "
            "UNION ALL SELECT 1 FROM gpkg_contents WHERE lower(table_name) = lower(?)",
            (name, name),
        ).fetchone():
            n += 1
            name = f"{base}_{n}"
        srs = srs_definition(grid.srs)
        conn.execute(
            "INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)",
            (srs.name, srs.code, srs.organization, srs.code, srs.wkt, grid.srs),
        )
        conn.execute(
            f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
            "zoom_level INTEGER NOT NULL, tile_column INTEGER NOT NULL, "
            "tile_row INTEGER NOT NULL, tile_data BLOB NOT NULL, "
            "UNIQUE (zoom_level, tile_column, tile_row))"
        )
        layer = self.layers.get(tileset.layer_name)
        extent = grid.bbox
        title, description = tileset.layer_name, ""
        if layer is not None:
            title, description = layer.title or layer.name, layer.abstract
            if layer.grid.name == grid.name:
                extent = layer.bbox
        identifier = f"{title} ({tileset.key.split('/', 1)[1]})"
        conn.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
            "min_x, min_y, max_x, max_y, srs_id) VALUES (?, 'tiles', ?, ?, ?, ?, ?, ?, ?)",
            (name, identifier, description, *extent.as_tuple(), srs.code),
        )
        conn.execute(
            "INSERT INTO gpkg_tile_matrix_set VALUES (?, ?, ?, ?, ?, ?)",
            (name, srs.code, *grid.bbox.as_tuple()),
        )
        matrices = []
        for z, resolution in enumerate(grid.resolutions):
            width, height = grid.matrix_size(z)
            size = grid.tile_size
            matrices.append((name, z, width, height, size, size, resolution, resolution))
        conn.executemany("INSERT INTO gpkg_tile_matrix VALUES (?, ?, ?, ?, ?, ?, ?, ?)", matrices)
        extensions = []
        if not zooms_halve(grid):
            extensions.append((name, "tile_data", *_ZOOM_OTHER, "read-write"))
        if tileset.extension.lower() == "webp":
            extensions.append((name, "tile_data", *_WEBP, "read-write"))
        conn.executemany("INSERT INTO gpkg_extensions VALUES (?, ?, ?, ?, ?)", extensions)
        conn.execute(
            "INSERT INTO tileserver_tilesets VALUES (?, ?, ?)",
            (name, tileset.prefix, tileset.extension),
        )
        return name

    def after_write(self, conn: sqlite3.Connection, tileset: Tileset, table: str) -> None:
        conn.execute(
            f"UPDATE gpkg_contents SET last_change = {_NOW} WHERE table_name = ?", (table,)
        )

    def tilesets_in(self, conn: sqlite3.Connection, file: Path) -> list[tuple[str, str, str]]:
        rows = conn.execute("SELECT prefix, extension, table_name FROM tileserver_tilesets")
        return [(str(p), str(e), str(t)) for p, e, t in rows]
