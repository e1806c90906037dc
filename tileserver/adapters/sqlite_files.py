"""SQLite files for the single-file stores (`sqlite_store`): connections in WAL mode, the
transaction of a write, a file's last write, a tile table's levels, and sqlite3's blocking
calls run in a thread with their failures translated (`StoreUnavailable`, `StoreOutage`
where every write would fail alike: disk full, read-only, not a database)."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tileserver.errors import StoreOutage, StoreUnavailable

T = TypeVar("T")

# SQLite result codes (https://www.sqlite.org/rescode.html) of a file every write fails on.
_OUTAGE_CODES = {8, 10, 11, 13, 14, 26}  # READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
_OUTAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES}


async def run_in(pool: ThreadPoolExecutor, where: str, call: Callable[[], T]) -> T:
    """call() in one of pool's threads; `where` ("file: what") starts its error message."""
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, call)
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        outage = code is not None and code & 0xFF in _OUTAGE_CODES
        raise (StoreOutage if outage else StoreUnavailable)(f"{where}: {exc}") from exc
    except OSError as exc:
        outage = exc.errno in _OUTAGE_ERRNOS
        failure = StoreOutage if outage else StoreUnavailable
        raise failure(f"{where}: {exc.strerror or exc}") from exc


def connect(
    file: Path,
    create: bool,
    busy_timeout: float,
    opened: Callable[[Path, sqlite3.Connection], None],
) -> sqlite3.Connection | None:
    """A connection to file (`opened` called on it); None when it does not exist and
    `create` is False."""
    if not create and not file.is_file():
        return None
    if create:
        file.parent.mkdir(parents=True, exist_ok=True)
    mode = "rwc" if create else "rw"
    conn = sqlite3.connect(
        f"{file.resolve().as_uri()}?mode={mode}",
        uri=True,
        timeout=busy_timeout,
        isolation_level=None,  # transactions are begun and ended here, explicitly
        check_same_thread=False,  # closed by `close`, from another thread
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if create and conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # recorded in the file: for every reader
        # NORMAL in WAL mode: a commit survives a crash of the process, and the file
        # stays consistent through a power loss (https://www.sqlite.org/wal.html).
        conn.execute("PRAGMA synchronous = NORMAL")
        opened(file, conn)
    except BaseException:
        conn.close()
        raise
    return conn


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any failure."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def last_write(file: Path) -> float | None:
    """When the database was last written: in WAL mode a commit writes the -wal file, and
    only a checkpoint the database itself. An empty -wal file holds no commit (a reader
    creates one when it opens the file): its time is not a write's."""
    try:
        modified = file.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        wal = file.with_name(file.name + "-wal").stat()
    except FileNotFoundError:
        return modified
    return max(modified, wal.st_mtime) if wal.st_size else modified


def level_rows(conn: sqlite3.Connection, table: str) -> Iterator[int]:
    """The levels (zoom_level values) present in a tile table."""
    # One index lookup per level (a skip scan) rather than a scan of every tile.
    zoom = conn.execute(f'SELECT MIN(zoom_level) FROM "{table}"').fetchone()[0]
    while zoom is not None:
        yield int(zoom)
        zoom = conn.execute(
            f'SELECT MIN(zoom_level) FROM "{table}" WHERE zoom_level > ?', (zoom,)
        ).fetchone()[0]
