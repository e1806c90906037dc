"""The folder store's writes (`FilesystemStore.put_many`): a directory is made once, and
again when it was removed meanwhile; a short write still writes the whole tile; a failed
write leaves no temporary file. (The contract suite has the rest: a concurrent reader
never sees part of a tile, a failed rename keeps the old tile, the files' mode.)"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tileserver.adapters import filesystem_store
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.errors import StoreOutage
from tileserver.store_layout import tile_path


def path(row: int, col: int, z: str = "5") -> str:
    return tile_path("", "osm", "default", (), "epsg3857", z, row, col, "png")


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def test_a_directory_is_made_once_for_all_its_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    makedirs = os.makedirs

    def counting(name: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        made.append(name)
        makedirs(name, mode, exist_ok)

    monkeypatch.setattr(os, "makedirs", counting)
    store = FilesystemStore(tmp_path)
    tiles = {path(5, col): bytes([col]) * 100 for col in range(33)}
    await store.put_many(tiles, "image/png")
    await store.put_many({path(5, 40): b"x", path(6, 1): b"y"}, "image/png")
    rows = [str(tmp_path / path(5, 0)).rpartition("/")[0],
            str(tmp_path / path(6, 1)).rpartition("/")[0]]  # fmt: skip
    # Each row's directory made once for its 34 and 1 tiles (makedirs' own calls for
    # the parents aside).
    assert [name for name in made if name in rows] == rows
    assert files_under(tmp_path) == sorted([*tiles, path(5, 40), path(6, 1)])
    for key, data in tiles.items():
        assert await store.get(key) == data


async def test_a_directory_removed_since_is_made_again(tmp_path: Path) -> None:
    """`generate_tiles --delete-empty`, a user's rm -r or another process may remove a
    directory the store has written into: the next tiles there are written all the same."""
    store = FilesystemStore(tmp_path)
    await store.put_many({path(5, 1): b"one", path(6, 1): b"two"}, "image/png")
    shutil.rmtree(tmp_path / "1.0.0")
    await store.put_many({path(5, 2): b"three", path(6, 1): b"four"}, "image/png")
    assert files_under(tmp_path) == sorted([path(5, 2), path(6, 1)])
    assert await store.get(path(5, 2)) == b"three"
    assert await store.get(path(6, 1)) == b"four"


async def test_a_short_write_still_writes_the_whole_tile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = os.write
    calls = 0

    def at_most_1000_bytes(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        return write(fd, data[:1000])

    monkeypatch.setattr(os, "write", at_most_1000_bytes)
    store = FilesystemStore(tmp_path, fsync=True)
    data = os.urandom(25_500)
    await store.put_many({path(5, 1): data}, "image/png")
    assert calls == 26
    assert (tmp_path / path(5, 1)).read_bytes() == data
    assert files_under(tmp_path) == [path(5, 1)]


async def test_a_write_refused_by_a_full_disk_is_an_outage_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStore(tmp_path)
    await store.put_many({path(5, 1): b"old"}, "image/png")

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StoreOutage, match="No space left"):
        await store.put_many({path(5, 1): b"new", path(5, 2): b"new"}, "image/png")
    monkeypatch.undo()
    assert files_under(tmp_path) == [path(5, 1)]  # no temporary file, the old tile kept
    assert await store.get(path(5, 1)) == b"old"


async def test_the_directories_remembered_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long run writes into more directories than a store remembers: past the bound it
    forgets them and learns them again, its tiles written all the same."""
    monkeypatch.setattr(filesystem_store, "_DIRECTORIES", 4)
    store = FilesystemStore(tmp_path)
    tiles = {path(row, 0): bytes([row]) * 10 for row in range(10)}
    for key, data in tiles.items():
        await store.put_many({key: data}, "image/png")
        assert len(store._directories) <= 4
    assert files_under(tmp_path) == sorted(tiles)
    for key, data in tiles.items():
        assert await store.get(key) == data
