"""The hot tier's re-reads (services/hot_tier): a tile served in the second half of its
time in the hot tier is read again from the shared cache in the background and kept on
while the cache has it fresh; a flushed one is not, so a flush still shows within the max
age. One clock moved by the test stands for the Unix clock of the service and of both
caches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.configs import single_layer
from tests.support.fakes import FakeRenderer, ManualClock
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.config import Layer
from tileserver.keys import layer_key_part, tile_key
from tileserver.services.resilient_cache import ResilientCache
from tileserver.services.tiles import TileService
from tileserver.tile_request import TileRequest
from tileserver.types import CacheEntry, TileCoord

MAX_AGE = 10.0


class CountingCache(ResilientCache):
    """The shared cache, counting the keys read from it."""

    def __init__(self, cache: MemoryCache) -> None:
        super().__init__(cache)
        self.reads: list[str] = []

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        self.reads.extend(keys)
        return await super().get_many(keys)


class Setup:
    def __init__(self, layer: Layer) -> None:
        self.clock = ManualClock()
        self.shared = MemoryCache(10**8, self.clock)  # stands for Memcached
        self.cache = CountingCache(self.shared)
        self.hot = MemoryCache(10**7, self.clock)
        self.renderer = FakeRenderer()
        self.service = TileService(
            self.cache, self.renderer, "p/", 5, hot=self.hot, hot_max_age=MAX_AGE,
            clock=self.clock,
        )  # fmt: skip
        self.tile = TileRequest(layer, "default", (), TileCoord(17, 47790, 68245))
        part = layer_key_part(layer.name, "default", (), layer.grid.name)
        self.key = tile_key("p/", part, self.tile.coord)

    async def rendered(self) -> None:
        first = await self.service.get_tile(self.tile)
        assert first.source == "render"
        await self.service.wait_renders()  # answer first: the metatile is written after
        assert self.renderer.count == 1

    def reads(self) -> int:
        return self.cache.reads.count(self.key)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(single_layer(tmp_path))


async def test_a_tile_served_in_the_second_half_of_its_time_is_read_again_and_kept_on(
    setup: Setup,
) -> None:
    await setup.rendered()
    reads = setup.reads()
    setup.clock.now += 4  # first half: answered, not read again
    first = await setup.service.get_tile(setup.tile)
    assert first.source == "hot"
    await setup.service.wait_renders()
    assert setup.reads() == reads
    setup.clock.now += 2  # second half: read again in the background, once
    for _ in range(3):
        assert (await setup.service.get_tile(setup.tile)).source == "hot"
    await setup.service.wait_renders()
    assert setup.reads() == reads + 1
    # Past the first copy's 10 s: still hot (kept on for 10 s from the re-read), with the
    # same bytes and validator, and no render.
    setup.clock.now += 8
    again = await setup.service.get_tile(setup.tile)
    assert again.source == "hot"
    assert (again.data, again.etag) == (first.data, first.etag)
    assert setup.renderer.count == 1


async def test_a_tile_flushed_from_the_cache_is_not_kept_on(setup: Setup) -> None:
    await setup.rendered()
    await setup.shared.close()  # flush_all
    setup.clock.now += 6
    assert (await setup.service.get_tile(setup.tile)).source == "hot"  # its re-read: a miss
    await setup.service.wait_renders()
    setup.clock.now += 4.5  # past the max age: the flush shows
    again = await setup.service.get_tile(setup.tile)
    assert again.source == "render"
    assert setup.renderer.count == 2


async def test_a_copy_replaced_during_the_re_read_stays(setup: Setup) -> None:
    await setup.rendered()
    setup.clock.now += 6
    assert (await setup.service.get_tile(setup.tile)).source == "hot"  # re-read started
    setup.hot.put(setup.key, b"rendered meanwhile", MAX_AGE, int(setup.clock.now), '"new"')
    await setup.service.wait_renders()
    held = setup.hot.get(setup.key)
    assert held is not None and (held.value, held.etag) == (b"rendered meanwhile", '"new"')


async def test_a_tile_near_its_layer_expiry_is_not_read_again(tmp_path: Path) -> None:
    setup = Setup(single_layer(tmp_path, expires=3 / 3600))  # hours: 3 s
    await setup.rendered()
    reads = setup.reads()
    setup.clock.now += 2.5  # hot for 3 s only (its expiry): nothing to keep it on for
    assert (await setup.service.get_tile(setup.tile)).source == "hot"
    await setup.service.wait_renders()
    assert setup.reads() == reads
    setup.clock.now += 1
    assert (await setup.service.get_tile(setup.tile)).source != "hot"


def test_held_tells_the_time_left_and_forgets_an_expired_entry() -> None:
    clock = ManualClock()
    hot = MemoryCache(10**6, clock)
    hot.put("k", b"v", 10, 7, '"e"')
    clock.now += 4
    held = hot.held("k")
    assert held is not None
    entry, left = held
    assert (entry.value, entry.stamp, entry.etag, left) == (b"v", 7, '"e"', 6.0)
    clock.now += 6
    assert hot.held("k") is None
    assert hot.size_bytes == 0
