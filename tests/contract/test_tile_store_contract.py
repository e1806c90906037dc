"""One contract every TileStore backend passes: a folder, S3 (a real SeaweedFS), MBTiles
and GeoPackage files."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemons import freeze
from tests.support.s3 import SeaweedS3
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.adapters.geopackage_store import GeoPackageStore
from tileserver.adapters.mbtiles_store import MBTilesStore
from tileserver.adapters.s3_store import S3Store
from tileserver.errors import StoreUnavailable
from tileserver.grid import WEB_MERCATOR_HALF_WORLD, Grid
from tileserver.protocols import TileStore
from tileserver.store_layout import tile_path
from tileserver.types import BBox

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8 + b"\r\n\x00\xff" * 100
DOWN_WITHIN = 3.0  # seconds a dead store may take to say so


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials for botocore's default chain, and no developer profile in the way."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in SeaweedS3.env().items():
        monkeypatch.setenv(name, value)


def s3_store(server: SeaweedS3, folder: str = "", **options: Any) -> S3Store:
    return S3Store(
        server.bucket,
        folder,
        endpoint_url=server.endpoint_url,
        cache_control="public, max-age=3600",
        **options,
    )


def web_mercator(name: str = "epsg3857", levels: int = 21) -> Grid:
    half = WEB_MERCATOR_HALF_WORLD
    return Grid(
        name=name,
        srs="EPSG:3857",
        bbox=BBox(-half, -half, half, half),
        resolutions=tuple(2 * half / 256 / 2**z for z in range(levels)),
    )


GRIDS = {"epsg3857": web_mercator(), "g": web_mercator("g")}


@pytest.fixture(params=["filesystem", "s3", "mbtiles", "geopackage"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, aws_env: None
) -> AsyncIterator[TileStore]:
    backend: TileStore
    if request.param == "filesystem":
        backend = FilesystemStore(tmp_path / "tiles")
    elif request.param == "mbtiles":  # a file per layer under a folder
        backend = MBTilesStore(tmp_path / "tiles", grids=GRIDS)
    elif request.param == "geopackage":  # every layer in one file
        backend = GeoPackageStore(tmp_path / "tiles.gpkg", grids=GRIDS, single_file=True)
    else:
        # A folder of its own per test: the bucket is the session's (tests/conftest.py).
        server = request.getfixturevalue("seaweed")
        backend = s3_store(server, f"run-{uuid.uuid4().hex[:12]}/tiles")
    await backend.open()
    yield backend
    await backend.close()


def path(
    layer: str = "osm", row: int = 5, col: int = 7, z: str = "5", dims: tuple[str, ...] = ()
) -> str:
    return tile_path("", layer, "default", dims, "epsg3857", z, row, col, "png")


async def listed(store: TileStore, prefix: str) -> list[str]:
    return sorted([p async for p in store.list_paths(prefix)])


# --- the contract -------------------------------------------------------------------------


async def test_put_many_then_get_returns_every_tile_byte_for_byte(store: TileStore) -> None:
    items = {
        path(col=1): PNG,
        path(col=2): b"",
        path(col=3): os.urandom(300_000),
        path(col=4, dims=("2021", "high")): bytes(range(256)),
    }
    await store.put_many(items, "image/png")
    for key, value in items.items():
        assert await store.get(key) == value


async def test_a_missing_tile_is_none(store: TileStore) -> None:
    assert await store.get(path()) is None
    await store.put_many({path(col=1): PNG}, "image/png")
    assert await store.get(path(col=2)) is None
    assert await store.get("1.0.0/osm") is None  # a "directory" is not a tile
    assert await store.get(path(col=1) + "/x.png") is None  # under a tile is nothing


async def test_put_overwrites(store: TileStore) -> None:
    await store.put_many({path(): b"old" * 1000}, "image/png")
    await store.put_many({path(): b"new"}, "image/png")
    assert await store.get(path()) == b"new"


# A store's time of a tile may lag the clock a little (file systems date with a coarse
# clock, a tick behind time.time(); S3 in whole seconds), never lead it.
CLOCK_GRAIN = 1.0


async def test_get_stored_dates_each_tile_within_its_write(store: TileStore) -> None:
    items = {path(col=1): PNG, path(col=2): b""}
    before = time.time()
    await store.put_many(items, "image/png")
    after = time.time()
    for key, value in items.items():
        stored = await store.get_stored(key)
        assert stored is not None and stored.data == value
        assert stored.modified is not None
        assert before - CLOCK_GRAIN < stored.modified <= after, (before, stored.modified, after)
    assert await store.get_stored(path(col=3)) is None
    assert await store.get_stored("1.0.0/osm") is None

    # Rewritten: dated by the new write, not the old one.
    again = time.time()
    await store.put_many({path(col=1): b"new"}, "image/png")
    stored = await store.get_stored(path(col=1))
    assert stored is not None and stored.data == b"new"
    assert stored.modified is not None
    assert again - CLOCK_GRAIN < stored.modified <= time.time()


async def test_delete_many_ignores_missing_tiles(store: TileStore) -> None:
    items = {path(col=c): PNG for c in range(5)}
    await store.put_many(items, "image/png")
    await store.delete_many([path(col=0), path(col=1), path(col=99), path(layer="none")])
    assert [await store.exists(p) for p in items] == [False, False, True, True, True]
    assert await store.get(path(col=0)) is None
    await store.delete_many([])


async def test_exists(store: TileStore) -> None:
    assert await store.exists(path()) is False
    await store.put_many({path(): b""}, "image/png")
    assert await store.exists(path()) is True
    assert await store.exists("1.0.0") is False


async def test_list_returns_exactly_the_paths_under_a_prefix(store: TileStore) -> None:
    a = {path("a", row, col) for row in range(3) for col in range(4)}
    a_dims = {path("a", 0, 0, dims=("2021",))}
    ab = {path("ab", 1, 1), path("ab", 1, 2, z="4")}
    await store.put_many(dict.fromkeys(a | a_dims | ab, PNG), "image/png")

    assert await listed(store, "") == sorted(a | a_dims | ab)
    assert await listed(store, "1.0.0/a/") == sorted(a | a_dims)
    assert await listed(store, "1.0.0/a/default/epsg3857/") == sorted(a)
    # A plain string prefix, as S3's: "1.0.0/a" starts layer "ab" too.
    assert await listed(store, "1.0.0/a") == sorted(a | a_dims | ab)
    assert await listed(store, "1.0.0/ab/default/epsg3857/4/") == [path("ab", 1, 2, z="4")]
    assert await listed(store, path("a", 2, 3)) == [path("a", 2, 3)]
    assert await listed(store, "1.0.0/zz/") == []
    assert await listed(store, "nothing/here/") == []


async def test_200_concurrent_puts(store: TileStore) -> None:
    singles = {path(row=i // 20, col=i % 20): os.urandom(2000) for i in range(200)}
    batch = {path("batch", row=i // 20, col=i % 20): os.urandom(2000) for i in range(200)}
    await asyncio.gather(
        *(store.put_many({key: value}, "image/png") for key, value in singles.items()),
        store.put_many(batch, "image/png"),
    )
    assert await listed(store, "") == sorted({*singles, *batch})
    found = await asyncio.gather(*(store.get(key) for key in [*singles, *batch]))
    assert found == [*singles.values(), *batch.values()]


@pytest.mark.parametrize(
    "bad", ["../x.png", "/etc/passwd", "a/../../x.png", "a//b.png", "", "./a.png", "a/", "a\\..\\b"]
)
async def test_a_path_leaving_the_root_is_refused(store: TileStore, bad: str) -> None:
    with pytest.raises(ValueError):
        await store.get(bad)
    with pytest.raises(ValueError):
        await store.get_stored(bad)
    with pytest.raises(ValueError):
        await store.exists(bad)
    with pytest.raises(ValueError):
        await store.put_many({path(): b"fine", bad: b"evil"}, "image/png")
    with pytest.raises(ValueError):
        await store.delete_many([path(), bad])
    assert await store.get(path()) is None  # nothing was written before the check


@pytest.mark.parametrize("bad", ["../", "/", "a//", "./", "/etc"])
async def test_a_prefix_leaving_the_root_is_refused(store: TileStore, bad: str) -> None:
    with pytest.raises(ValueError):
        await listed(store, bad)


# --- S3 -----------------------------------------------------------------------------------


async def test_s3_objects_carry_content_type_and_cache_control(
    seaweed: SeaweedS3, aws_env: None
) -> None:
    store = s3_store(seaweed, f"/headers-{uuid.uuid4().hex[:8]}/")
    await store.open()
    try:
        await store.put_many({path(): PNG}, "image/png")
        await store.put_many({path(col=8).replace(".png", ".jpeg"): b"\xff\xd8"}, "image/jpeg")
    finally:
        await store.close()

    def head(key: str) -> dict[str, object]:
        client = seaweed.client()
        try:
            return dict(client.head_object(Bucket=seaweed.bucket, Key=key))
        finally:
            client.close()

    png = await asyncio.to_thread(head, store.folder + path())
    assert png["ContentType"] == "image/png"
    assert png["CacheControl"] == "public, max-age=3600"
    assert png["ContentLength"] == len(PNG)
    jpeg = await asyncio.to_thread(head, store.folder + path(col=8).replace(".png", ".jpeg"))
    assert jpeg["ContentType"] == "image/jpeg"


async def test_s3_without_a_folder_writes_the_bare_layout(
    seaweed: SeaweedS3, aws_env: None
) -> None:
    store = s3_store(seaweed)
    key = tile_path("", f"root{uuid.uuid4().hex[:8]}", "default", (), "g", "0", 0, 0, "png")
    await store.open()
    try:
        await store.put_many({key: b"x"}, "image/png")
        assert key.startswith("1.0.0/")
        assert [p async for p in store.list_paths(key.rpartition("/")[0])] == [key]
    finally:
        await store.delete_many([key])
        await store.close()


async def test_s3_missing_bucket_is_unavailable(seaweed: SeaweedS3, aws_env: None) -> None:
    store = S3Store("no-such-bucket", endpoint_url=seaweed.endpoint_url)
    await store.open()
    try:
        with pytest.raises(StoreUnavailable, match="NoSuchBucket"):
            await store.get(path())
        with pytest.raises(StoreUnavailable, match="no-such-bucket"):
            await store.put_many({path(): b"x"}, "image/png")
    finally:
        await store.close()


async def assert_unavailable_soon(store: TileStore) -> None:
    """Every operation raises StoreUnavailable, each within DOWN_WITHIN seconds."""

    async def listing() -> None:
        await listed(store, "1.0.0/")

    operations = [
        lambda: store.get(path()),
        lambda: store.exists(path()),
        lambda: store.put_many({path(col=c): PNG for c in range(10)}, "image/png"),
        lambda: store.delete_many([path()]),
        listing,
    ]
    for operation in operations:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            # A hang fails the test here rather than waiting for pytest-timeout.
            async with asyncio.timeout(DOWN_WITHIN + 5):
                await operation()
        assert time.monotonic() - started < DOWN_WITHIN


async def test_s3_with_nothing_listening_is_unavailable(aws_env: None, closed_port: int) -> None:
    store = S3Store("tiles", endpoint_url=f"http://127.0.0.1:{closed_port}")
    await store.open()
    try:
        await assert_unavailable_soon(store)
    finally:
        await store.close()


@pytest.fixture
def doomed_seaweed() -> Iterator[SeaweedS3]:
    """A private SeaweedFS that the test freezes and kills."""
    server = SeaweedS3()
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


async def test_s3_server_frozen_then_killed_mid_test(
    doomed_seaweed: SeaweedS3, aws_env: None
) -> None:
    store = s3_store(doomed_seaweed, "outage", read_timeout=0.5)
    await store.open()
    try:
        await store.put_many({path(): PNG}, "image/png")
        assert await store.get(path()) == PNG
        assert doomed_seaweed.proc is not None

        # Frozen: connections are accepted (by the kernel) but never answered.
        freeze(doomed_seaweed.proc.pid)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.get(path())
            assert time.monotonic() - started < DOWN_WITHIN
        finally:
            os.kill(doomed_seaweed.proc.pid, signal.SIGCONT)
        assert await store.get(path()) == PNG  # back once it answers again

        # Killed: connections are refused, on the kept-alive ones too.
        doomed_seaweed.kill()
        await assert_unavailable_soon(store)
    finally:
        await store.close()


# --- the folder ---------------------------------------------------------------------------


async def test_a_concurrent_reader_never_sees_a_partial_tile(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    versions = [bytes([i]) * 2_000_000 for i in range(1, 4)]
    key = path()
    await store.put_many({key: versions[0]}, "image/png")
    tile = tmp_path.joinpath(*key.split("/"))
    seen: list[bytes] = []
    stray: list[str] = []
    done = threading.Event()

    def read_continuously() -> None:
        while not done.is_set():
            seen.append(tile.read_bytes())
            stray.extend(n for n in os.listdir(tile.parent) if n != tile.name)

    reader = asyncio.create_task(asyncio.to_thread(read_continuously))
    try:
        for i in range(60):
            await store.put_many({key: versions[i % len(versions)]}, "image/png")
            assert await listed(store, "") == [key]  # a temporary file is never a tile
    finally:
        done.set()
        await reader
    assert len(seen) > 10
    assert all(data in versions for data in seen)
    # The reader may have seen temporary files beside the tile, never left behind.
    assert all(name.startswith(f".{tile.name}.") and name.endswith(".tmp") for name in stray)
    assert sorted(os.listdir(tile.parent)) == [tile.name]


async def test_a_failed_write_leaves_the_old_tile_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStore(tmp_path, fsync=True)
    await store.put_many({path(): b"old"}, "image/png")

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device", dst)

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(StoreUnavailable, match="No space left"):
        await store.put_many({path(): b"new", path(col=8): b"new"}, "image/png")
    monkeypatch.undo()
    assert await store.get(path()) == b"old"
    assert await store.get(path(col=8)) is None
    leftovers = [name for _, _, files in os.walk(tmp_path) for name in files]
    assert leftovers == [path().rpartition("/")[2]]


async def test_tiles_get_the_usual_file_mode(tmp_path: Path) -> None:
    """Readable by a web server serving the folder (mkstemp would make them 0600)."""
    store = FilesystemStore(tmp_path)
    await store.put_many({path(): PNG}, "image/png")
    mode = tmp_path.joinpath(*path().split("/")).stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


async def test_a_folder_that_cannot_be_written_is_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "a-file"
    root.write_bytes(b"not a folder")
    store = FilesystemStore(root)
    assert await store.get(path()) is None
    assert await store.exists(path()) is False
    assert await listed(store, "") == []
    with pytest.raises(StoreUnavailable, match="a-file"):
        await store.put_many({path(): PNG}, "image/png")


async def test_nothing_is_written_outside_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FilesystemStore(root)
    for bad in ("../escaped.png", "a/../../escaped.png"):
        with pytest.raises(ValueError):
            await store.put_many({bad: b"x"}, "image/png")
    assert not (tmp_path / "escaped.png").exists()
    assert not root.exists()


# --- the read side, PMTiles included --------------------------------------------------------
# A PMTiles archive is read-only and holds one layer: these tests fill each store with the
# tiles of one layer (a PMTiles archive by exporting a folder), then read them back.

READ_TILES = {
    tile_path("", "osm", "default", (), "g", str(z), row, col, "png"): os.urandom(
        50 + z * 100 + col
    )
    for z, row, col in [(0, 0, 0), (3, 2, 5), (3, 2, 6), (3, 7, 7), (5, 20, 31), (8, 200, 100)]
}
READ_TILES[tile_path("", "osm", "default", (), "g", "4", 1, 1, "png")] = b""  # empty bytes too


async def _archive(tmp_path: Path) -> Path:
    """A PMTiles archive of READ_TILES, exported from a folder store."""
    from tests.support.configs import single_layer
    from tileserver.adapters.pmtiles_store import PMTilesWriter, tile_order
    from tileserver.services.pmtiles_export import export_layer

    layer = single_layer(tmp_path, name="osm")
    source = FilesystemStore(tmp_path / "source")
    await source.put_many(READ_TILES, "image/png")
    target = tmp_path / "osm.pmtiles"
    stats = await export_layer(layer, source, range(10), PMTilesWriter(target), tile_order)
    assert stats.tiles == len(READ_TILES)
    assert stats.levels == (0, 3, 4, 5, 8)
    return target


@pytest.fixture
def fill_started() -> float:
    """When `filled` began writing its tiles (its archive, for PMTiles)."""
    return time.time()


@pytest.fixture(params=["filesystem", "mbtiles", "geopackage", "pmtiles-file", "pmtiles-http"])
async def filled(
    request: pytest.FixtureRequest, tmp_path: Path, aiohttp_server: Any, fill_started: float
) -> AsyncIterator[TileStore]:
    from aiohttp import web

    from tileserver.adapters.pmtiles_store import PMTilesStore
    from tileserver.store_layout import Tileset

    backend: TileStore
    if request.param.startswith("pmtiles"):
        archive = await _archive(tmp_path)
        source = str(archive)
        if request.param == "pmtiles-http":  # aiohttp's FileResponse answers Range requests

            async def serve(_: web.Request) -> web.FileResponse:
                return web.FileResponse(archive)

            app = web.Application()
            app.router.add_get("/tiles/osm.pmtiles", serve)
            server = await aiohttp_server(app)
            source = str(server.make_url("/tiles/osm.pmtiles"))
        tileset = Tileset("1.0.0/osm/default/g", "png", "osm", GRIDS["g"])
        backend = PMTilesStore(source, tileset)
    else:
        if request.param == "filesystem":
            backend = FilesystemStore(tmp_path / "tiles")
        elif request.param == "mbtiles":
            backend = MBTilesStore(tmp_path / "tiles", grids=GRIDS)
        else:
            backend = GeoPackageStore(tmp_path / "t.gpkg", grids=GRIDS, single_file=True)
        await backend.open()
        await backend.put_many(READ_TILES, "image/png")
        await backend.close()
    await backend.open()
    yield backend
    await backend.close()


async def test_read_every_tile_byte_for_byte(filled: TileStore) -> None:
    for key, value in READ_TILES.items():
        assert await filled.get(key) == value
        assert await filled.exists(key) is True


async def test_read_every_tile_with_the_time_it_was_stored(
    filled: TileStore, fill_started: float
) -> None:
    for key, value in READ_TILES.items():
        stored = await filled.get_stored(key)
        assert stored is not None and stored.data == value
        assert stored.modified is not None
        assert fill_started - CLOCK_GRAIN < stored.modified <= time.time()
    assert (
        await filled.get_stored(tile_path("", "osm", "default", (), "g", "3", 2, 4, "png")) is None
    )


async def test_read_a_missing_tile_is_none(filled: TileStore) -> None:
    missing = [
        tile_path("", "osm", "default", (), "g", "3", 2, 4, "png"),  # beside stored ones
        tile_path("", "osm", "default", (), "g", "9", 0, 0, "png"),  # a level without tiles
        tile_path("", "osm", "default", (), "g", "3", 2, 5, "jpeg"),  # another extension
        tile_path("", "other", "default", (), "g", "3", 2, 5, "png"),  # another layer
        "1.0.0/osm/default/g/3/2",
    ]
    for key in missing:
        assert await filled.get(key) is None
        assert await filled.get_stored(key) is None
        assert await filled.exists(key) is False


async def test_read_lists_exactly_the_paths_under_a_prefix(filled: TileStore) -> None:
    every = sorted(READ_TILES)
    assert await listed(filled, "") == every
    assert await listed(filled, "1.0.0/osm/") == every
    assert await listed(filled, "1.0.0/osm/default/g/3/") == [p for p in every if "/g/3/" in p]
    assert await listed(filled, "1.0.0/osm/default/g/3/2/") == [p for p in every if "/g/3/2/" in p]
    assert await listed(filled, "1.0.0/o") == every
    assert await listed(filled, "1.0.0/other/") == []


@pytest.mark.parametrize("bad", ["../x.png", "/etc/passwd", "a/../../x.png", "a//b.png", ""])
async def test_read_a_path_leaving_the_root_is_refused(filled: TileStore, bad: str) -> None:
    with pytest.raises(ValueError):
        await filled.get(bad)
    with pytest.raises(ValueError):
        await filled.get_stored(bad)
    with pytest.raises(ValueError):
        await filled.exists(bad)


async def test_a_pmtiles_store_refuses_writes(tmp_path: Path) -> None:
    from tileserver.adapters.pmtiles_store import PMTilesStore

    store = PMTilesStore(str(await _archive(tmp_path)), None)
    await store.open()
    try:
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.put_many({path(): PNG}, "image/png")
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.delete_many([path()])
        assert await store.get(next(iter(READ_TILES))) is None  # bound to no layer: serves none
    finally:
        await store.close()


async def test_a_pmtiles_url_that_does_not_answer_is_an_outage(closed_port: int) -> None:
    from tileserver.adapters.pmtiles_store import PMTilesStore
    from tileserver.errors import StoreOutage

    store = PMTilesStore(f"http://127.0.0.1:{closed_port}/osm.pmtiles", None, timeout=2)
    started = time.monotonic()
    with pytest.raises(StoreOutage):
        await store.open()
    assert time.monotonic() - started < DOWN_WITHIN


async def test_a_file_that_is_not_an_archive_is_an_outage(tmp_path: Path) -> None:
    from tileserver.adapters.pmtiles_store import PMTilesStore
    from tileserver.errors import StoreOutage

    (tmp_path / "x.pmtiles").write_bytes(b"not an archive" * 100)
    with pytest.raises(StoreOutage, match="not a PMTiles 3 archive"):
        await PMTilesStore(str(tmp_path / "x.pmtiles"), None).open()
