"""Tile store in MBTiles files (https://github.com/mapbox/mbtiles-spec, 1.3).

MBTiles addresses tiles by Web Mercator zoom, column and TMS row (counted from the
bottom), so it holds only grids that are the Web Mercator quadtree (`config` refuses
the others). One file holds one tileset: with `folder`, one file per layer, style,
dimension values and grid, named as TileCloud-chain names them
(`1.0.0/{layer}/{style}/[{dims}/]{grid}.{ext}.mbtiles`); with `file`, the one tileset it
is `bound` to. The `metadata` table carries name, format, bounds, minzoom and maxzoom,
kept true at each write. See `sqlite_store` for the transactions and locking.

TileCloud-chain wrote its MBTiles files otherwise: rows counted from the top, the grid's
own level numbers as zoom_level, and no metadata. A file with tiles but neither `name`
nor `format` in its metadata (which every MBTiles version requires) is such a file: it is
read and written in TileCloud-chain's layout, its metadata left as it is, so a
TileCloud-chain user's files serve the same map here.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from tileserver.adapters.sqlite_files import level_rows
from tileserver.adapters.sqlite_store import SqliteTileStore
from tileserver.config import Layer
from tileserver.crs import bbox_to_wgs84
from tileserver.grid import Grid, web_mercator_zoom_offset
from tileserver.store_layout import Tileset

# MBTiles 1.3 names JPEG "jpg"; other extensions are the format's name.
_FORMATS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp", "pbf": "pbf"}
_WORLD_BOUNDS = "-180,-85.0511287798066,180,85.0511287798066"

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS metadata (name TEXT NOT NULL, value TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS metadata_name ON metadata (name);
CREATE TABLE IF NOT EXISTS tiles (
    zoom_level INTEGER NOT NULL, tile_column INTEGER NOT NULL, tile_row INTEGER NOT NULL,
    tile_data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS tile_index ON tiles (zoom_level, tile_column, tile_row);
"""


def mbtiles_format(extension: str) -> str:
    return _FORMATS.get(extension.lower(), extension.lower())


class MBTilesStore(SqliteTileStore):
    """Tiles in MBTiles files; `bound` is the tileset key ("1.0.0/osm/default/g.png") of
    a single `file`."""

    suffix = ".mbtiles"
    kind = "MBTiles"

    def __init__(
        self,
        location: str | Path,
        *,
        grids: Mapping[str, Grid],
        layers: Mapping[str, Layer] | None = None,
        single_file: bool = False,
        bound: str | None = None,
    ) -> None:
        super().__init__(location, grids=grids, layers=layers, single_file=single_file)
        self.bound = bound
        self._top_left: dict[Path, bool] = {}  # files in TileCloud-chain's layout

    def opened(self, file: Path, conn: sqlite3.Connection) -> None:
        tcc = written_by_tilecloud_chain(conn)
        if tcc and not self._top_left.get(file):
            log.warning("%s: an MBTiles file without metadata, as TileCloud-chain writes them: "
                        "read and written in its layout (rows from the top)", file)  # fmt: skip
        self._top_left[file] = tcc

    def unsupported(self, grid: Grid) -> str | None:
        if web_mercator_zoom_offset(grid) is None:
            return (
                f"grid {grid.name!r} is not the Web Mercator quadtree (EPSG:3857, the world's "
                "bbox, resolutions halving): MBTiles holds no other; use a geopackage cache"
            )
        return None

    def bound_to(self, tileset: Tileset) -> bool:
        return not self.single_file or tileset.key == self.bound

    def _offset(self, tileset: Tileset) -> int:
        offset = web_mercator_zoom_offset(tileset.grid)
        assert offset is not None  # `tileset` leaves out the other grids
        return offset

    def to_row(
        self, file: Path, tileset: Tileset, z: int, row: int, col: int
    ) -> tuple[int, int, int]:
        if self._top_left.get(file):
            return z, col, row
        zoom = z + self._offset(tileset)
        return zoom, col, (1 << zoom) - 1 - row  # TMS rows count from the bottom

    def from_row(
        self, file: Path, tileset: Tileset, zoom_level: int, column: int, row: int
    ) -> tuple[int, int, int]:
        if self._top_left.get(file):
            return zoom_level, row, column
        return zoom_level - self._offset(tileset), (1 << zoom_level) - 1 - row, column

    def find_table(self, conn: sqlite3.Connection, tileset: Tileset) -> str | None:
        return "tiles" if _has_tiles(conn) else None

    def create_table(self, conn: sqlite3.Connection, tileset: Tileset) -> str:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)  # executescript would commit the transaction
        layer = self.layers.get(tileset.layer_name)
        bounds = _WORLD_BOUNDS
        if layer is not None and layer.grid.name == tileset.grid.name:
            box = bbox_to_wgs84(layer.bbox, layer.grid.srs)
            bounds = ",".join(f"{v:.7f}".rstrip("0").rstrip(".") for v in box.as_tuple())
        metadata = {
            "name": (layer.title or layer.name) if layer is not None else tileset.layer_name,
            "format": mbtiles_format(tileset.extension),
            "bounds": bounds,
            "type": "baselayer",
            "description": layer.abstract if layer is not None and layer.abstract else "",
        }
        conn.executemany(
            "INSERT OR IGNORE INTO metadata (name, value) VALUES (?, ?)",
            [(k, v) for k, v in metadata.items() if v],
        )
        return "tiles"

    def after_write(self, conn: sqlite3.Connection, tileset: Tileset, table: str) -> None:
        if written_by_tilecloud_chain(conn):
            return  # its metadata stays as TileCloud-chain left it
        levels = list(level_rows(conn, table))
        if levels:
            conn.executemany(
                "INSERT OR REPLACE INTO metadata (name, value) VALUES (?, ?)",
                [("minzoom", str(levels[0])), ("maxzoom", str(levels[-1]))],
            )

    def tilesets_in(self, conn: sqlite3.Connection, file: Path) -> list[tuple[str, str, str]]:
        if not _has_tiles(conn):
            return []
        key = self.bound if self.single_file else self.folder_key(file)
        if key is None:
            return []
        prefix, _, extension = key.rpartition(".")
        return [(prefix, extension, "tiles")]


def _has_tiles(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'tiles' AND type IN ('table', 'view')"
    ).fetchone()
    return found is not None


def written_by_tilecloud_chain(conn: sqlite3.Connection) -> bool:
    """A `tiles` table without the metadata every MBTiles version requires (`name`,
    `format`): TileCloud-chain's layout (rows from the top, the grid's levels)."""
    if not _has_tiles(conn):
        return False
    try:
        found = conn.execute(
            "SELECT 1 FROM metadata WHERE name IN ('name', 'format') LIMIT 1"
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return True
        raise
    return found is None
