"""The threads of a single-file store (`sqlite_store`): sqlite3 blocks, so every call runs
in a thread. Reads run in a small pool whose threads each keep their own connection to
each file; writes in one thread owning the only writer connection of each file. A call's
failure is translated by `sqlite_files.run_in`."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tileserver.adapters.sqlite_files import connect, run_in

T = TypeVar("T")


class SqliteThreads:
    """The reader pool and the writer thread of one store, and their connections.

    `owner` names the store in messages, `location` starts each failure's message;
    `opened` is called with each new connection (see `sqlite_files.connect`).
    """

    def __init__(
        self,
        owner: str,
        location: Path,
        opened: Callable[[Path, sqlite3.Connection], None],
        *,
        busy_timeout: float,
        readers: int,
    ) -> None:
        self.owner = owner
        self.location = location
        self.opened = opened
        self.busy_timeout = busy_timeout
        self._readers_count = readers
        self._reader_pool: ThreadPoolExecutor | None = None
        self._writer_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writers: dict[Path, sqlite3.Connection] = {}  # used by the writer thread only

    async def open(self) -> None:
        if self._reader_pool is None:
            self._reader_pool = ThreadPoolExecutor(self._readers_count, "sqlite-read")
            self._writer_pool = ThreadPoolExecutor(1, "sqlite-write")

    async def close(self) -> None:
        readers, writer = self._reader_pool, self._writer_pool
        self._reader_pool = self._writer_pool = None
        if writer is not None:
            await asyncio.get_running_loop().run_in_executor(writer, self._close_writers)
            writer.shutdown(wait=True)
        if readers is not None:
            readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()
        self._local = threading.local()

    def _close_writers(self) -> None:
        for conn in self._writers.values():
            conn.close()
        self._writers.clear()

    async def read(self, what: str, call: Callable[[], T]) -> T:
        """call() in a reader thread, where `reader` gives its connections."""
        return await self._run(self._reader_pool, what, call)

    async def write(self, what: str, call: Callable[[], T]) -> T:
        """call() in the writer thread, where `writer` gives its connections."""
        return await self._run(self._writer_pool, what, call)

    async def _run(self, pool: ThreadPoolExecutor | None, what: str, call: Callable[[], T]) -> T:
        if pool is None:
            raise RuntimeError(f"{self.owner} used before open() or after close()")
        return await run_in(pool, f"{self.location}: {what}", call)

    def reader(self, file: Path) -> sqlite3.Connection | None:
        """This reader thread's connection to file (opened once it exists), read-only."""
        connections: dict[Path, sqlite3.Connection] = self._local.__dict__.setdefault("c", {})
        conn = connections.get(file)
        if conn is None:
            conn = connect(file, False, self.busy_timeout, self.opened)
            if conn is None:
                return None
            conn.execute("PRAGMA query_only = ON")
            connections[file] = conn
            with self._lock:
                self._reader_connections.append(conn)
        return conn

    def writer(self, file: Path) -> sqlite3.Connection:
        """The writer thread's connection to file, created with the file when missing."""
        conn = self._writers.get(file)
        if conn is None:
            conn = connect(file, True, self.busy_timeout, self.opened)
            assert conn is not None
            self._writers[file] = conn
        return conn

    def thread_memo(self) -> dict[Any, Any]:
        """A dict of the calling thread's own, forgotten at `close` (with the connections)."""
        memo: dict[Any, Any] = self._local.__dict__.setdefault("memo", {})
        return memo
