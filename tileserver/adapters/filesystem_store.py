"""Tile store in a folder, laid out as TileCloud-chain writes it.

Every file operation runs in a worker thread, so a slow disk never blocks the event loop.
A tile is written to a temporary file beside its final name and then renamed over it
(`os.replace` is atomic on POSIX): a reader sees the old tile or the new one, never part
of one, and a crash leaves at most a temporary file, whose name (`.{name}.{random}.tmp`)
no tile path can have. Every failure is raised as `StoreUnavailable`; `StoreOutage` when
the file system refuses every write (full, read-only, over quota).

A write costs four system calls (create, write, close, rename): the directories a store
has made or written into are remembered, and made again only when a create finds one
gone (benchmarks/RESULTS.md, issue 15, phase 6).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
import secrets
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path

from tileserver.errors import StoreOutage, StoreUnavailable
from tileserver.store_layout import check_path, check_prefix
from tileserver.types import StoredTile

# Reading a path through a missing directory, or a directory itself, finds no tile.
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
_LIST_BATCH = 1000  # paths listed per trip to a worker thread
# The file system refuses every write, not one path's: full, read-only, over quota.
_OUTAGES = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
# Directories remembered per store (a z18 run over a country has hundreds of thousands):
# past this many, forgotten and learnt again (one makedirs each).
_DIRECTORIES = 16384


def is_temporary(name: str) -> bool:
    """True for the name of a file a write in progress (or a crash) left."""
    return name.startswith(".") and name.endswith(".tmp")


class FilesystemStore:
    """Tiles under `root`; `fsync` makes each write durable before it is renamed."""

    def __init__(self, root: str | os.PathLike[str], fsync: bool = False) -> None:
        self.root = Path(root)
        self.fsync = fsync
        # The directories this store's writes made or wrote into (os.fspath strings): no
        # mkdir before each write. One removed since is made again (`_create`).
        self._directories: set[str] = set()

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def _file(self, path: str) -> Path:
        return self.root.joinpath(*check_path(path).split("/"))

    def _unavailable(self, what: str, path: str, exc: OSError) -> StoreUnavailable:
        reason = exc.strerror or type(exc).__name__
        if exc.errno in _OUTAGES:
            return StoreOutage(f"{self.root}: {what} {path!r}: {reason}")
        return StoreUnavailable(f"{self.root}: {what} {path!r}: {reason}")

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # --- reads ------------------------------------------------------------------------

    async def get(self, path: str) -> bytes | None:
        file = self._file(path)
        try:
            return await asyncio.to_thread(file.read_bytes)
        except _MISSING:
            return None
        except OSError as exc:
            raise self._unavailable("read", path, exc) from exc

    async def get_stored(self, path: str) -> StoredTile | None:
        file = self._file(path)
        try:
            return await asyncio.to_thread(_read_stored, file)
        except _MISSING:
            return None
        except OSError as exc:
            raise self._unavailable("read", path, exc) from exc

    async def exists(self, path: str) -> bool:
        file = self._file(path)
        try:
            return await asyncio.to_thread(file.is_file)
        except OSError as exc:
            raise self._unavailable("stat", path, exc) from exc

    async def list_paths(self, prefix: str) -> AsyncIterator[str]:
        check_prefix(prefix)
        # Walk only the deepest directory the prefix names; filter on its partial last part.
        directory = prefix.rpartition("/")[0]
        walker = self._walk(directory, prefix)
        try:
            while True:
                try:
                    batch = await asyncio.to_thread(_take, walker, _LIST_BATCH)
                except OSError as exc:
                    raise self._unavailable("list", prefix, exc) from exc
                for path in batch:
                    yield path
                if len(batch) < _LIST_BATCH:
                    return
        finally:
            # A cancelled listing may leave the walk running in its thread: let it end there.
            if inspect.getgeneratorstate(walker) != inspect.GEN_RUNNING:
                walker.close()

    def _walk(self, directory: str, prefix: str) -> Generator[str, None, None]:
        top = self.root.joinpath(*directory.split("/")) if directory else self.root

        def fail(exc: OSError) -> None:
            if not isinstance(exc, _MISSING):
                raise exc

        for current, dirs, files in os.walk(top, onerror=fail):
            base = Path(current).relative_to(self.root).as_posix()
            base = "" if base == "." else base + "/"
            # Skip the subdirectories that cannot hold a path with the prefix.
            dirs[:] = [d for d in dirs if _may_start(base + d + "/", prefix)]
            for name in files:
                path = base + name
                if path.startswith(prefix) and not is_temporary(name):
                    yield path

    # --- writes -----------------------------------------------------------------------

    async def put_many(self, items: Mapping[str, bytes], content_type: str) -> None:
        root = os.fspath(self.root)
        # Every path checked first; each as a string: no Path object per tile.
        files = {path: os.path.join(root, *check_path(path).split("/")) for path in items}
        # One worker thread writes them all, one after the other: a thread per file made
        # twice the CPU time, the threads taking turns at the GIL and the kernel's lock of
        # the directory they all create files in (benchmarks/RESULTS.md, issue 15, phase 5).
        # Every write is tried, failed or not, and none is still under way once put_many
        # has returned, even cancelled (shielded: a thread cannot be cancelled).
        writes = asyncio.ensure_future(asyncio.to_thread(self._write_all, files, items))
        try:
            results = await asyncio.shield(writes)
        except asyncio.CancelledError:
            await asyncio.wait({writes})
            raise
        failures = [(p, r) for p, r in zip(items, results, strict=True) if r is not None]
        # A failure of the whole file system first: it says more than a path's.
        failures.sort(key=lambda f: not (isinstance(f[1], OSError) and f[1].errno in _OUTAGES))
        for path, result in failures:
            if isinstance(result, OSError):
                raise self._unavailable("write", path, result) from result
            raise result

    def _write_all(
        self, files: Mapping[str, str], items: Mapping[str, bytes]
    ) -> list[Exception | None]:
        """Writes each item at its file; what each write raised, in items' order."""
        results: list[Exception | None] = []
        for path, data in items.items():
            try:
                self._write(files[path], data)
            except Exception as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    def _write(self, file: str, data: bytes) -> None:
        directory, name = os.path.split(file)
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        fd = self._create(directory, temporary)
        try:
            try:
                view = memoryview(data)
                while view:  # a regular file takes it all at once, short writes aside
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, file)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
        if self.fsync:
            _fsync_directory(Path(directory))

    def _create(self, directory: str, temporary: str) -> int:
        """The temporary file, created in directory, made first if it is not known."""
        if directory not in self._directories:
            os.makedirs(directory, exist_ok=True)
            if len(self._directories) >= _DIRECTORIES:
                self._directories.clear()
            self._directories.add(directory)
        try:
            # os.open rather than tempfile.mkstemp: the tile gets the usual 0o666 & ~umask
            # mode, readable by a web server that serves the folder directly.
            return os.open(temporary, _CREATE, 0o666)
        except FileNotFoundError:  # the directory was removed since it was made
            self._directories.discard(directory)
            os.makedirs(directory, exist_ok=True)
            self._directories.add(directory)
            return os.open(temporary, _CREATE, 0o666)

    async def delete_many(self, paths: Iterable[str]) -> None:
        files = [self._file(path) for path in paths]
        try:
            await asyncio.to_thread(_unlink_all, files)
        except OSError as exc:
            raise self._unavailable("delete", str(exc.filename), exc) from exc


def _read_stored(file: Path) -> StoredTile:
    # The mtime of the file read (fstat of the open file, after reading it: a later
    # time, never an earlier one); a tile replaced meanwhile is another file.
    with file.open("rb") as tile:
        data = tile.read()
        return StoredTile(data, os.fstat(tile.fileno()).st_mtime)


def _may_start(directory: str, prefix: str) -> bool:
    """True when a path under `directory` (ending with '/') may start with `prefix`."""
    return directory.startswith(prefix) or prefix.startswith(directory)


def _take(paths: Iterator[str], count: int) -> list[str]:
    batch: list[str] = []
    for path in paths:
        batch.append(path)
        if len(batch) == count:
            break
    return batch


def _unlink_all(files: list[Path]) -> None:
    for file in files:
        with suppress(*_MISSING):
            file.unlink()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
