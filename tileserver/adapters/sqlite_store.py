"""The SQLite core of the single-file tile stores (MBTiles, GeoPackage).

A store keeps the tiles of a *tileset* (one layer, style, dimension values, matrix set
and extension: the part of a tile path before the matrix id) in one table of one SQLite
file: with `folder`, one file per tileset, named after the tile paths it replaces
(`{folder}/1.0.0/{layer}/{style}/[{dimension values}/]{matrix set}.{ext}.mbtiles`, as
TileCloud-chain names its MBTiles files); with `file`, one file for every tileset (a
GeoPackage holds a table per tileset; an MBTiles file holds one tileset, the one it is
`bound` to).

Files are in WAL mode, so any number of reader processes (the server's) read while one
writer (`generate_tiles`) writes; writes wait for another writer's lock up to
`busy_timeout` (BEGIN IMMEDIATE: the lock is taken before reading, so two writers never
deadlock). Each `put_many` or `delete_many` is one transaction per file: a process
killed mid-run leaves the file as it was after its last commit, whole.

sqlite3 blocks, so every call runs in a thread (`sqlite_threads`): reads in a small pool
whose threads each keep their own connections, writes in one thread owning the only
writer connection of each file. Failures are raised as `StoreUnavailable`, `StoreOutage`
when every write would fail alike (disk full, read-only, a file that is not a database).
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tileserver.adapters.sqlite_files import Transaction, last_write
from tileserver.adapters.sqlite_threads import SqliteThreads
from tileserver.config import Layer
from tileserver.grid import Grid
from tileserver.store_layout import (
    Tileset,
    check_path,
    check_prefix,
    parse_tile_path,
    tile_prefix,
)
from tileserver.types import StoredTile

_LIST_BATCH = 2000  # rows read per trip to a reader thread


@dataclass(frozen=True, slots=True)
class Located:
    """Where one tile path lives: its tileset, file and level, row and column."""

    tileset: Tileset
    file: Path
    z: int
    row: int
    col: int


class SqliteTileStore:
    """The TileStore protocol over SQLite files; MBTiles and GeoPackage fill in the schema.

    `grids` are the grids by name (a tile path names its matrix set, whose matrix ids
    give the levels); `layers` give the metadata of the files (title, bbox, format).
    """

    suffix: ClassVar[str]  # the files' extension, ".mbtiles"
    kind: ClassVar[str]  # for messages: "MBTiles"

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        grids: Mapping[str, Grid],
        layers: Mapping[str, Layer] | None = None,
        single_file: bool = False,
        busy_timeout: float = 60.0,
        readers: int = 4,
    ) -> None:
        self.location = Path(location)
        self.single_file = single_file
        self.grids = dict(grids)
        self.layers = dict(layers or {})
        self.threads = SqliteThreads(
            repr(self), self.location, self.opened, busy_timeout=busy_timeout, readers=readers
        )

    def __repr__(self) -> str:
        mode = "file" if self.single_file else "folder"
        return f"{type(self).__name__}({mode}={str(self.location)!r})"

    # --- what subclasses provide ------------------------------------------------------

    def unsupported(self, grid: Grid) -> str | None:
        """Why the format cannot hold tiles of grid; None when it can."""
        return None

    def bound_to(self, tileset: Tileset) -> bool:
        """False for a tileset that a single file of this format cannot hold."""
        return True

    def create_schema(self, conn: sqlite3.Connection) -> None:
        """Creates the file's own tables when missing (inside each write transaction)."""

    def find_table(self, conn: sqlite3.Connection, tileset: Tileset) -> str | None:
        """The table of tileset in conn's file; None when it has none (yet)."""
        raise NotImplementedError

    def create_table(self, conn: sqlite3.Connection, tileset: Tileset) -> str:
        """Creates the table of a new tileset, with its metadata; its name."""
        raise NotImplementedError

    def opened(self, file: Path, conn: sqlite3.Connection) -> None:
        """Called with each new connection to a file (to learn how the file is laid out)."""

    def to_row(
        self, file: Path, tileset: Tileset, z: int, row: int, col: int
    ) -> tuple[int, int, int]:
        """(zoom_level, tile_column, tile_row) of a tile in the format's table of file."""
        raise NotImplementedError

    def from_row(
        self, file: Path, tileset: Tileset, zoom_level: int, column: int, row: int
    ) -> tuple[int, int, int]:
        """(z, row, col) of a row of the format's table of file; the inverse of to_row."""
        raise NotImplementedError

    def after_write(self, conn: sqlite3.Connection, tileset: Tileset, table: str) -> None:
        """Keeps the metadata true after tiles were written or deleted (same transaction)."""

    def tilesets_in(self, conn: sqlite3.Connection, file: Path) -> list[tuple[str, str, str]]:
        """(prefix, extension, table) of every tileset of a file."""
        raise NotImplementedError

    def folder_key(self, file: Path) -> str:
        """The tileset key a file of the folder is named after ("1.0.0/osm/default/g.png")."""
        return file.relative_to(self.location).as_posix()[: -len(self.suffix)]

    # --- locating tiles ---------------------------------------------------------------

    def tileset(
        self, prefix: str, extension: str, matrix_set: str, layer_name: str
    ) -> Tileset | None:
        grid = self.grids.get(matrix_set)
        if grid is None or self.unsupported(grid) is not None:
            return None
        return Tileset(prefix, extension, layer_name, grid)

    def file_of(self, tileset: Tileset) -> Path:
        if self.single_file:
            return self.location
        return self.location.joinpath(*(tileset.key + self.suffix).split("/"))

    def locate(self, path: str) -> Located | None:
        """Where the tile of `path` lives; None for a path that is no tile of this store
        (not a tile path, an unknown matrix set or matrix, outside the matrix). ValueError
        for a path leaving the store's root."""
        parsed = parse_tile_path("", check_path(path))
        if parsed is None:
            return None
        prefix = tile_prefix(
            "", parsed.layer_name, parsed.style, parsed.dimension_values, parsed.matrix_set
        ).rstrip("/")
        tileset = self.tileset(prefix, parsed.extension, parsed.matrix_set, parsed.layer_name)
        if tileset is None or not self.bound_to(tileset):
            return None
        z = tileset.grid.zoom_of(parsed.matrix_id)
        if z is None:
            return None
        width, height = tileset.grid.matrix_size(z)
        if parsed.row >= height or parsed.col >= width:
            return None
        return Located(tileset, self.file_of(tileset), z, parsed.row, parsed.col)

    def _locate_for_write(self, path: str) -> Located:
        located = self.locate(path)
        if located is not None:
            return located
        parsed = parse_tile_path("", path)
        if parsed is None:
            raise ValueError(f"{self!r}: {path!r} is not a tile path: {self.kind} holds tiles only")
        grid = self.grids.get(parsed.matrix_set)
        if grid is None:
            raise ValueError(f"{self!r}: {path!r}: no grid {parsed.matrix_set!r}")
        why = self.unsupported(grid)
        if why is not None:
            raise ValueError(f"{self!r}: {path!r}: {why}")
        raise ValueError(f"{self!r}: {path!r} is outside the grid or not the file's tileset")

    # --- threads and connections -------------------------------------------------------

    async def open(self) -> None:
        await self.threads.open()

    async def close(self) -> None:
        await self.threads.close()

    def _table_for_read(self, conn: sqlite3.Connection, tileset: Tileset) -> str | None:
        # A table once found stays (tables are never dropped): looked up once per connection.
        tables: dict[tuple[int, Tileset], str] = self.threads.thread_memo()
        table = tables.get((id(conn), tileset))
        if table is not None:
            return table
        try:
            table = self.find_table(conn, tileset)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None  # a file being created: its schema is not committed yet
            raise
        if table is not None:
            tables[(id(conn), tileset)] = table
        return table

    # --- reads ------------------------------------------------------------------------

    def _select(self, located: Located, column: str) -> tuple[object, ...] | None:
        conn = self.threads.reader(located.file)
        if conn is None:
            return None
        table = self._table_for_read(conn, located.tileset)
        if table is None:
            return None
        zoom, col, row = self.to_row(
            located.file, located.tileset, located.z, located.row, located.col
        )
        return conn.execute(  # type: ignore[no-any-return]
            f'SELECT {column} FROM "{table}" '
            "WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
            (zoom, col, row),
        ).fetchone()

    async def get(self, path: str) -> bytes | None:
        located = self.locate(path)
        if located is None:
            return None
        found = await self.threads.read(
            f"read {path!r}", lambda: self._select(located, "tile_data")
        )
        return None if found is None else bytes(found[0])  # type: ignore[call-overload]

    async def get_stored(self, path: str) -> StoredTile | None:
        located = self.locate(path)
        if located is None:
            return None
        return await self.threads.read(f"read {path!r}", lambda: self._select_stored(located))

    def _select_stored(self, located: Located) -> StoredTile | None:
        found = self._select(located, "tile_data")
        if found is None:
            return None
        # Neither MBTiles nor GeoPackage dates a tile: the file's last write dates them all.
        # Taken after the read, it is an upper bound of the tile's own write, which is what
        # Last-Modified needs (a later time costs a revalidation a 200, never a missed change).
        return StoredTile(bytes(found[0]), last_write(located.file))  # type: ignore[call-overload]

    async def exists(self, path: str) -> bool:
        located = self.locate(path)
        if located is None:
            return False
        found = await self.threads.read(f"read {path!r}", lambda: self._select(located, "1"))
        return found is not None

    async def list_paths(self, prefix: str) -> AsyncIterator[str]:
        check_prefix(prefix)
        files = await self.threads.read("list", self._files)
        for file in files:
            tilesets = await self.threads.read(f"list {file}",
                                               lambda f=file: self._tilesets(f))  # type: ignore[misc]  # fmt: skip
            for tileset, table in tilesets:
                head = tileset.prefix + "/"
                if not (head.startswith(prefix) or prefix.startswith(head)):
                    continue
                after = 0
                while True:
                    rows = await self.threads.read(
                        f"list {file}",
                        lambda f=file, t=table, a=after: self._rows(f, t, a),  # type: ignore[misc]
                    )
                    for _rowid, zoom, col, row in rows:
                        z, r, c = self.from_row(file, tileset, zoom, col, row)
                        if 0 <= z < len(tileset.grid.resolutions):
                            path = tileset.path(z, r, c)
                            if path.startswith(prefix):
                                yield path
                    if len(rows) < _LIST_BATCH:
                        break
                    after = rows[-1][0]

    def _files(self) -> list[Path]:
        if self.single_file:
            return [self.location] if self.location.is_file() else []
        if not self.location.is_dir():
            return []
        found: list[Path] = []
        for current, _dirs, names in os.walk(self.location):
            found.extend(Path(current, n) for n in names if n.endswith(self.suffix))
        return sorted(found)

    def _tilesets(self, file: Path) -> list[tuple[Tileset, str]]:
        conn = self.threads.reader(file)
        if conn is None:
            return []
        try:
            listed = self.tilesets_in(conn, file)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        if not self.single_file:
            # A file of the folder is the tileset its name says, whatever it holds.
            name = self.folder_key(file)
            listed = [(p, e, t) for p, e, t in listed if f"{p}.{e}" == name]
        found: list[tuple[Tileset, str]] = []
        for prefix, extension, table in listed:
            parsed = parse_tile_path("", f"{prefix}/0/0/0.{extension}")
            if parsed is None:
                continue
            tileset = self.tileset(prefix, extension, parsed.matrix_set, parsed.layer_name)
            if tileset is not None:
                found.append((tileset, table))
        return found

    def _rows(self, file: Path, table: str, after: int) -> list[tuple[int, int, int, int]]:
        conn = self.threads.reader(file)
        if conn is None:
            return []
        return conn.execute(
            f'SELECT rowid, zoom_level, tile_column, tile_row FROM "{table}" '
            "WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, _LIST_BATCH),
        ).fetchall()

    # --- writes -----------------------------------------------------------------------

    async def put_many(self, items: Mapping[str, bytes], content_type: str) -> None:
        by_file: dict[Path, list[tuple[Located, bytes]]] = defaultdict(list)
        for path, data in items.items():  # every path checked before anything is written
            located = self._locate_for_write(path)
            by_file[located.file].append((located, data))
        for file, tiles in by_file.items():
            await self.threads.write(f"write {file.name}",
                                     lambda f=file, t=tiles: self._write(f, t))  # type: ignore[misc]  # fmt: skip

    async def delete_many(self, paths: Iterable[str]) -> None:
        by_file: dict[Path, list[Located]] = defaultdict(list)
        for path in paths:
            located = self.locate(path)
            if located is not None:
                by_file[located.file].append(located)
        for file, tiles in by_file.items():
            await self.threads.write(f"delete in {file.name}",
                                     lambda f=file, t=tiles: self._delete(f, t))  # type: ignore[misc]  # fmt: skip

    def _write(self, file: Path, tiles: list[tuple[Located, bytes]]) -> None:
        conn = self.threads.writer(file)
        with Transaction(conn):
            self.create_schema(conn)
            by_tileset: dict[Tileset, list[tuple[int, int, int, bytes]]] = defaultdict(list)
            for located, data in tiles:
                key = self.to_row(file, located.tileset, located.z, located.row, located.col)
                by_tileset[located.tileset].append((*key, data))
            for tileset, rows in by_tileset.items():
                table = self.find_table(conn, tileset) or self.create_table(conn, tileset)
                conn.executemany(
                    f'INSERT INTO "{table}" (zoom_level, tile_column, tile_row, tile_data) '
                    "VALUES (?, ?, ?, ?) ON CONFLICT (zoom_level, tile_column, tile_row) "
                    "DO UPDATE SET tile_data = excluded.tile_data",
                    rows,
                )
                self.after_write(conn, tileset, table)

    def _delete(self, file: Path, tiles: list[Located]) -> None:
        if not file.is_file():
            return  # nothing stored there: no empty file created for nothing
        conn = self.threads.writer(file)
        with Transaction(conn):
            by_tileset: dict[Tileset, list[tuple[int, int, int]]] = defaultdict(list)
            for located in tiles:
                key = self.to_row(file, located.tileset, located.z, located.row, located.col)
                by_tileset[located.tileset].append(key)
            for tileset, keys in by_tileset.items():
                table = self._table_for_read(conn, tileset)
                if table is None:
                    continue
                conn.executemany(
                    f'DELETE FROM "{table}" '
                    "WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
                    keys,
                )
                self.after_write(conn, tileset, table)
