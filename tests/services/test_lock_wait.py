"""Waiting for a metatile another process renders: the first look at the cache is at once,
and a holder on the same host tells its waiters when its lock is released, so that they
need not wait for a poll. Two TileServices sharing a cache, each with its own notices,
stand for two server processes; the polls are made an hour long, so that a waiter that
had to poll would never answer (the test's timeout would fail it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from tests.support.configs import single_layer
from tests.support.fakes import FakeRenderer
from tests.support.release_notices import Holder, holder_and_waiter
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.adapters.release_notices import UnixReleaseNotices
from tileserver.config import Layer
from tileserver.keys import layer_key_part, metatile_lock_key, tile_key
from tileserver.services import lock_wait
from tileserver.services.render_lock import lock_value
from tileserver.services.resilient_cache import ResilientCache
from tileserver.services.tiles import TileService
from tileserver.tile_request import TileRequest, key_part
from tileserver.types import TileCoord

HOUR = 3600.0


@pytest.fixture
def layer(tmp_path: Path) -> Layer:
    return single_layer(tmp_path)


@pytest.fixture(autouse=True)
def polls_of_an_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_wait, "POLL_FIRST", HOUR)
    monkeypatch.setattr(lock_wait, "POLL_MAX", HOUR)


@pytest.fixture
async def notices() -> AsyncIterator[tuple[Holder, UnixReleaseNotices]]:
    async with holder_and_waiter() as pair:
        yield pair


def request(layer: Layer, row: int, col: int) -> TileRequest:
    return TileRequest(layer, "default", (), TileCoord(17, row, col))


def service(cache: MemoryCache, renderer: FakeRenderer, notices: UnixReleaseNotices) -> TileService:
    return TileService(ResilientCache(cache), renderer, "p/", 30, notices=notices)


async def test_a_waiter_of_another_process_is_told_when_the_tiles_are_written(
    layer: Layer, notices: tuple[Holder, UnixReleaseNotices]
) -> None:
    shared, gate = MemoryCache(10**8), asyncio.Event()
    first, second = FakeRenderer(gate=gate), FakeRenderer()
    one, two = service(shared, first, notices[0]), service(shared, second, notices[1])
    rendering = asyncio.create_task(one.get_tile(request(layer, 47784, 68240)))
    await first.started.wait()
    waiting = asyncio.create_task(two.get_tile(request(layer, 47785, 68241)))
    lock = metatile_lock_key("p/", layer_key_part("l", "default", (), "g"), 17, 47784, 68240)
    await notices[0].read.wait()  # the waiter has looked, found the lock, asked
    assert notices[0].told(lock) == 1
    assert not waiting.done()
    gate.set()
    tile = await asyncio.wait_for(waiting, 60)
    assert (await rendering).source == "render"
    assert tile.source == "memory" and tile.data.startswith(b"17/47785/68241 ")
    assert first.count + second.count == 1


async def test_a_waiter_takes_the_lock_at_once_when_the_render_failed(
    layer: Layer, notices: tuple[Holder, UnixReleaseNotices]
) -> None:
    shared, gate = MemoryCache(10**8), asyncio.Event()
    first, second = FakeRenderer(gate=gate, fail=True), FakeRenderer()
    one, two = service(shared, first, notices[0]), service(shared, second, notices[1])
    rendering = asyncio.create_task(one.get_tile(request(layer, 47784, 68240)))
    await first.started.wait()
    waiting = asyncio.create_task(two.get_tile(request(layer, 47785, 68241)))
    lock = metatile_lock_key("p/", layer_key_part("l", "default", (), "g"), 17, 47784, 68240)
    await notices[0].read.wait()
    assert notices[0].told(lock) == 1
    gate.set()
    tile = await asyncio.wait_for(waiting, 60)
    assert tile.source == "render" and second.count == 1  # its own render, not a poll later
    assert isinstance((await asyncio.gather(rendering, return_exceptions=True))[0], Exception)


class HolderWritesMeanwhile(MemoryCache):
    """The tile cache as a request sees it while another host's holder ends its render:
    the request misses the tile, then finds the lock taken (`add`), the tiles written by
    then and the lock not yet released."""

    def __init__(self, lock: str, tile: str) -> None:
        super().__init__(10**8)
        self.lock, self.tile = lock, tile

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        if key == self.lock:
            holder = lock_value("elsewhere:1", time.time() + HOUR)  # another host's
            await super().add(key, holder, 60)
            await self.set_many({self.tile: b"theirs"}, 60)
        return await super().add(key, value, ttl)


async def test_tiles_written_under_a_lock_not_yet_released_are_found_at_once(
    layer: Layer,
) -> None:
    part = layer_key_part("l", "default", (), "g")
    lock = metatile_lock_key("p/", part, 17, 47784, 68240)
    cache = HolderWritesMeanwhile(lock, tile_key("p/", part, TileCoord(17, 47785, 68241)))
    renderer = FakeRenderer()
    svc = TileService(ResilientCache(cache), renderer, "p/", 30)
    tile = await asyncio.wait_for(svc.get_tile(request(layer, 47785, 68241)), 60)
    assert tile.data == b"theirs" and tile.source == "memory"
    assert renderer.count == 0


class SlowWrites(MemoryCache):
    """A cache whose writes of tiles wait for `gate` (a Memcached slow to take them)."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__(10**8)
        self.gate = gate
        self.writing = asyncio.Event()

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> bool:
        if len(items) > 1:  # a metatile's tiles (a lease's renewal writes its lock alone)
            self.writing.set()
            await self.gate.wait()
        return await super().set_many(items, ttl, stamp)


async def test_requests_of_the_same_process_get_the_tiles_before_they_are_written(
    layer: Layer,
) -> None:
    """One render, its first tile answered first, the other requests for the metatile
    answered from the rendered tiles while they are still being written."""
    gate = asyncio.Event()
    cache, renderer = SlowWrites(gate), FakeRenderer()
    svc = TileService(ResilientCache(cache), renderer, "p/", 30)
    tiles = [asyncio.create_task(svc.get_tile(request(layer, 47784, 68240 + i))) for i in range(8)]
    await cache.writing.wait()
    answered = await asyncio.wait_for(asyncio.gather(*tiles), 60)  # the write still waits
    assert renderer.count == 1
    assert sorted(t.source for t in answered) == ["coalesced"] * 7 + ["render"]
    for i, tile in enumerate(answered):
        assert tile.data.startswith(f"17/47784/{68240 + i} ".encode())
    second = tile_key("p/", key_part(request(layer, 47784, 68241)), TileCoord(17, 47784, 68241))
    assert await cache.get_many([second]) == {}  # not written yet
    gate.set()
    await svc.wait_renders()
    assert (await cache.get_many([second]))[second].value == answered[1].data
