"""TileService with the embedded cache and a counting fake renderer: one render per
metatile within a process and across processes sharing a cache, lock timeouts, failures."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import mercator_grid, single_layer
from tests.support.fakes import FakeRenderer, ManualClock, tile_bytes
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.config import Layer, parse_config
from tileserver.errors import RenderError
from tileserver.keys import layer_key_part, metatile_lock_key, tile_key
from tileserver.services.render_lock import lock_value
from tileserver.services.resilient_cache import ResilientCache
from tileserver.services.tiles import TileService
from tileserver.store_layout import tile_path
from tileserver.tile_request import TileRequest
from tileserver.types import TileCoord


@pytest.fixture
def layer(tmp_path: Path) -> Layer:
    return single_layer(tmp_path, dimensions=[{"name": "D", "values": ["a", "b"], "default": "a"}])


def request(layer: Layer, row: int, col: int, dim: str = "a") -> TileRequest:
    return TileRequest(layer, "default", (dim,), TileCoord(17, row, col))


def service(cache: MemoryCache, renderer: FakeRenderer, lock_timeout: float = 5) -> TileService:
    return TileService(ResilientCache(cache), renderer, "p/", lock_timeout)


async def test_concurrent_requests_in_one_process_share_one_render(layer: Layer) -> None:
    renderer = FakeRenderer()
    svc = service(MemoryCache(10**8), renderer)
    tiles = await asyncio.gather(
        *(svc.get_tile(request(layer, 47784 + i % 8, 68240 + i // 8)) for i in range(64))
    )
    assert renderer.count == 1
    assert [t.source for t in tiles].count("render") == 1
    assert {t.source for t in tiles} == {"render", "coalesced"}
    for i, tile in enumerate(tiles):
        assert tile.data.startswith(f"17/{47784 + i % 8}/{68240 + i // 8} ".encode())
    again = await svc.get_tile(request(layer, 47790, 68245))
    assert again.source == "memory"
    assert renderer.count == 1


async def test_dimension_values_are_rendered_and_cached_apart(layer: Layer) -> None:
    renderer = FakeRenderer()
    svc = service(MemoryCache(10**8), renderer)
    a = await svc.get_tile(request(layer, 47784, 68240, "a"))
    b = await svc.get_tile(request(layer, 47784, 68240, "b"))
    assert renderer.count == 2
    assert a.data.endswith(b"{'D': 'a'}") and b.data.endswith(b"{'D': 'b'}")


async def test_two_processes_sharing_a_cache_render_a_metatile_once(layer: Layer) -> None:
    shared = MemoryCache(10**8)  # stands for Memcached, seen by both "processes"
    first, second = FakeRenderer(delay=0.2), FakeRenderer(delay=0.2)
    one, two = service(shared, first), service(shared, second)
    tiles = await asyncio.gather(
        one.get_tile(request(layer, 47784, 68240)),
        two.get_tile(request(layer, 47785, 68241)),
    )
    assert first.count + second.count == 1
    assert sorted(t.source for t in tiles) == ["memory", "render"]
    assert tiles[1].data.startswith(b"17/47785/68241 ")


async def test_a_lock_left_by_a_dead_holder_is_ignored_after_lock_timeout(layer: Layer) -> None:
    cache = MemoryCache(10**8)
    part = layer_key_part("l", "default", ("a",), "g")
    await cache.add(metatile_lock_key("p/", part, 17, 47784, 68240), b"1", ttl=3600)
    renderer = FakeRenderer(delay=0)
    svc = service(cache, renderer, lock_timeout=0.3)
    started = asyncio.get_running_loop().time()
    tile = await svc.get_tile(request(layer, 47784, 68240))
    waited = asyncio.get_running_loop().time() - started
    assert tile.source == "render"
    assert renderer.count == 1
    assert 0.3 <= waited < 10  # at lock_timeout, far from the lock's TTL (an hour)


async def test_a_failed_render_reaches_every_waiter_and_releases_the_lock(layer: Layer) -> None:
    cache = MemoryCache(10**8)
    renderer = FakeRenderer(fail=True)
    svc = service(cache, renderer)
    results = await asyncio.gather(
        *(svc.get_tile(request(layer, 47784, 68240 + i)) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, RenderError) for r in results)
    assert renderer.count == 1
    renderer.fail = False
    tile = await svc.get_tile(request(layer, 47784, 68240))
    assert tile.source == "render"
    assert renderer.count == 2


async def test_a_client_that_goes_away_does_not_cancel_the_shared_render(layer: Layer) -> None:
    gate = asyncio.Event()
    renderer = FakeRenderer(gate=gate)  # the render lasts until the gate opens
    svc = service(MemoryCache(10**8), renderer)
    impatient = asyncio.create_task(svc.get_tile(request(layer, 47784, 68240)))
    await renderer.started.wait()
    patient = asyncio.create_task(svc.get_tile(request(layer, 47784, 68241)))
    impatient.cancel()
    gate.set()
    tile = await patient
    assert tile.data.startswith(b"17/47784/68241 ")
    assert renderer.count == 1
    assert (await svc.get_tile(request(layer, 47784, 68240))).source == "memory"


async def test_the_hot_tier_answers_without_the_cache_for_at_most_its_max_age(
    layer: Layer,
) -> None:
    renderer, cache, clock = FakeRenderer(), MemoryCache(10**8), ManualClock(1000.0)
    svc = TileService(
        ResilientCache(cache), renderer, "p/", 5, hot=MemoryCache(10**7, clock), hot_max_age=10
    )
    first = await svc.get_tile(request(layer, 47790, 68245))
    assert first.source == "render"
    await svc.wait_renders()  # answered first: the other tiles are written meanwhile
    # Every tile of the rendered metatile is hot, and answered from there.
    neighbour = await svc.get_tile(request(layer, 47791, 68246))
    assert neighbour.source == "hot"
    assert neighbour.data is not None and neighbour.data.startswith(b"17/47791/68246 ")
    # A flush of the shared cache shows once the hot copy is older than max_age.
    await cache.close()
    clock.now += 9
    assert (await svc.get_tile(request(layer, 47790, 68245))).source == "hot"
    clock.now += 2
    again = await svc.get_tile(request(layer, 47790, 68245))
    assert again.source == "render" and renderer.count == 2


async def test_the_hot_tier_keeps_no_tile_beyond_its_layer_expiry(tmp_path: Path) -> None:
    short = single_layer(tmp_path, expires=3 / 3600)  # hours: 3 s
    renderer, clock = FakeRenderer(), ManualClock(1000.0)
    svc = TileService(
        ResilientCache(MemoryCache(10**8)), renderer, "p/", 5,
        hot=MemoryCache(10**7, clock), hot_max_age=60,
    )  # fmt: skip
    tile = TileRequest(short, "default", (), TileCoord(17, 47790, 68245))
    await svc.get_tile(tile)
    clock.now += 2.5
    assert (await svc.get_tile(tile)).source == "hot"
    clock.now += 1
    assert (await svc.get_tile(tile)).source == "memory"


# --- leases and stale windows ----------------------------------------------------------------


def stale_service(
    cache: MemoryCache, renderer: FakeRenderer, clock: ManualClock, lock_lease: float = 5.0
) -> TileService:
    return TileService(ResilientCache(cache), renderer, "p/", 30, lock_lease=lock_lease,
                       clock=clock)  # fmt: skip


async def test_a_lock_whose_deadline_passed_is_taken_over_at_once(layer: Layer) -> None:
    """A lock written late (by a Memcached resumed from a pause) or left by a dead holder:
    its deadline is past, so nobody waits for its TTL or for lock_timeout (30 s)."""
    cache, clock, renderer = MemoryCache(10**8), ManualClock(), FakeRenderer(delay=0)
    part = layer_key_part("l", "default", ("a",), "g")
    lock = metatile_lock_key("p/", part, 17, 47784, 68240)
    await cache.add(lock, lock_value("elsewhere:1", clock.now - 15), ttl=3600)
    svc = stale_service(cache, renderer, clock)
    started = asyncio.get_running_loop().time()
    tile = await svc.get_tile(request(layer, 47784, 68240))
    assert asyncio.get_running_loop().time() - started < 1
    assert tile.source == "render" and renderer.count == 1
    await svc.wait_renders()  # answered first; the lock goes once every tile is written
    assert await cache.get_many([lock]) == {}  # released


async def test_a_lease_is_renewed_while_its_render_runs(layer: Layer) -> None:
    """A render longer than the lease keeps its lock: another process waits for it instead
    of rendering too."""
    shared, gate = MemoryCache(10**8), asyncio.Event()
    first, second = FakeRenderer(gate=gate), FakeRenderer(gate=gate)
    one = TileService(ResilientCache(shared), first, "p/", 30, lock_lease=1.0)
    two = TileService(ResilientCache(shared), second, "p/", 30, lock_lease=1.0)
    rendering = asyncio.create_task(one.get_tile(request(layer, 47784, 68240)))
    await first.started.wait()  # the lock is taken before the render starts
    waiting = asyncio.create_task(two.get_tile(request(layer, 47785, 68241)))
    await asyncio.sleep(2.5)  # the subject: the render outlasts its lease 2.5 times
    assert not waiting.done() and second.count == 0
    gate.set()
    assert (await rendering).source == "render"
    assert (await waiting).source == "memory"
    assert first.count + second.count == 1


@pytest.fixture
def stale_layer(tmp_path: Path) -> Layer:
    # expires in hours: 10 s; answered stale for 100 s past it while refreshing, or for
    # 300 s past it when the render fails.
    return single_layer(tmp_path, expires=10 / 3600, stale_while_revalidate=100,
                        stale_if_error=300)  # fmt: skip


async def test_stale_while_revalidate_answers_at_once_and_refreshes_once(
    stale_layer: Layer,
) -> None:
    gate = asyncio.Event()
    gate.set()
    cache, clock, renderer = MemoryCache(10**8), ManualClock(), FakeRenderer(gate=gate)
    svc = stale_service(cache, renderer, clock)
    tile = TileRequest(stale_layer, "default", (), TileCoord(17, 47784, 68240))
    rendered = await svc.get_tile(tile)
    assert rendered.source == "render" and rendered.rendered_at == clock.now
    await svc.wait_renders()  # answered first: the tiles are written meanwhile
    clock.now += 9
    assert (await svc.get_tile(tile)).source == "memory"
    clock.now += 6  # 15 s old: stale
    gate.clear()  # the refresh's render runs until the test ends it
    answers = await asyncio.wait_for(asyncio.gather(
        *(svc.get_tile(TileRequest(stale_layer, "default", (), TileCoord(17, 47784, 68240 + i)))
          for i in range(8))
    ), 60)  # fmt: skip
    # Answered while the refresh's render is still held: none of them waited for it.
    assert {a.source for a in answers} == {"stale"}
    assert answers[0].data == rendered.data and answers[0].rendered_at == clock.now - 15
    assert svc.renders_in_progress == 1
    gate.set()
    await asyncio.wait_for(asyncio.gather(*svc._refreshing.values()), 60)
    assert renderer.count == 2
    fresh = await svc.get_tile(tile)
    assert fresh.source == "memory" and fresh.rendered_at == clock.now


async def test_stale_if_error_answers_the_stale_tile_until_the_window_closes(
    stale_layer: Layer,
) -> None:
    cache, clock, renderer = MemoryCache(10**8), ManualClock(), FakeRenderer(delay=0)
    svc = stale_service(cache, renderer, clock)
    tile = TileRequest(stale_layer, "default", (), TileCoord(17, 47784, 68240))
    rendered = await svc.get_tile(tile)
    await svc.wait_renders()  # answered first: the tiles are written meanwhile
    renderer.fail = True
    clock.now += 10 + 150  # past stale_while_revalidate, within stale_if_error
    stale = await svc.get_tile(tile)
    assert stale.source == "stale" and stale.data == rendered.data
    assert renderer.count == 2  # it did try
    clock.now += 200  # 350 s past its expiry: beyond the window
    with pytest.raises(RenderError):
        await svc.get_tile(tile)
    renderer.fail = False
    assert (await svc.get_tile(tile)).source == "render"


async def test_without_stale_windows_an_expired_tile_is_rendered_again(layer: Layer) -> None:
    """Both windows off (the default): a tile past its expiry is never answered, even while
    the cache still holds it."""
    cache, clock, renderer = MemoryCache(10**8), ManualClock(), FakeRenderer(delay=0)
    svc = stale_service(cache, renderer, clock)
    assert (await svc.get_tile(request(layer, 47784, 68240))).source == "render"
    await svc.wait_renders()  # answered first: the tiles are written meanwhile
    clock.now += layer.ttl_seconds + 1
    renderer.fail = True
    with pytest.raises(RenderError):
        await svc.get_tile(request(layer, 47784, 68240))


async def test_answer_first_one_render_for_fifty_concurrent_requests(layer: Layer) -> None:
    """The request that starts a render is answered as soon as its tile is encoded, while
    the rest of the metatile is still being encoded; 49 others, in this process and in
    another sharing the cache, get their tiles once they are written; one render."""
    shared = MemoryCache(10**8)
    rest = asyncio.Event()
    first, second = FakeRenderer(rest_gate=rest), FakeRenderer(rest_gate=rest)
    one, two = service(shared, first), service(shared, second)
    starter = asyncio.create_task(one.get_tile(request(layer, 47784, 68240)))
    await first.started.wait()
    others = [
        asyncio.create_task((one if i % 2 else two).get_tile(request(layer, 47784 + i % 8,
                                                                   68240 + i // 8 % 8)))
        for i in range(1, 50)
    ]  # fmt: skip
    answer = await starter  # while `rest` is not set: the other tiles are not encoded yet
    assert answer.source == "render"
    assert answer.data == tile_bytes(TileCoord(17, 47784, 68240), {"D": "a"})
    assert not any(task.done() for task in others)
    assert one.renders_in_progress == 1
    rest.set()
    tiles = await asyncio.gather(*others)
    assert first.count + second.count == 1 and first.firsts == 1
    for i, tile in zip(range(1, 50), tiles, strict=True):
        coord = TileCoord(17, 47784 + i % 8, 68240 + i // 8 % 8)
        assert tile.data == tile_bytes(coord, {"D": "a"}), (i, tile)
        assert tile.source in ("coalesced", "memory", "render")
    await one.wait_renders()
    cached = await one.get_tile(request(layer, 47784, 68240))
    assert (cached.source, cached.data) == ("memory", answer.data)
    assert first.count + second.count == 1


async def test_a_render_that_fails_after_its_first_tile_still_fails_its_waiters(
    layer: Layer, caplog: pytest.LogCaptureFixture
) -> None:
    """The first request was answered; the render then fails: the others get the error
    (no tile is half-written), the next request renders again."""

    class FailsAfterFirst(FakeRenderer):
        async def render(self, *args: Any, **kwargs: Any) -> dict[TileCoord, bytes]:
            tiles = await super().render(*args, **kwargs)
            if self.count == 1:
                raise RenderError("the process died after its first tile")
            return tiles

    rest = asyncio.Event()
    renderer = FailsAfterFirst(rest_gate=rest)
    cache = MemoryCache(10**8)
    svc = service(cache, renderer)
    starter = asyncio.create_task(svc.get_tile(request(layer, 47784, 68240)))
    await renderer.started.wait()
    waiter = asyncio.create_task(svc.get_tile(request(layer, 47785, 68241)))
    assert (await starter).source == "render"
    rest.set()
    with pytest.raises(RenderError):
        await waiter
    await svc.wait_renders()
    assert cache.size_bytes == 0  # not one tile written, and the lock released
    assert "failed after its first tile was answered" in caplog.text
    assert (await svc.get_tile(request(layer, 47785, 68241))).source == "render"
    assert renderer.count == 2


# --- when a tile was made (Last-Modified) ------------------------------------------------------


async def test_a_rendered_tile_is_dated_by_its_render_from_the_cache_and_the_hot_tier(
    layer: Layer,
) -> None:
    cache, clock = MemoryCache(10**8), ManualClock()
    svc = TileService(ResilientCache(cache), FakeRenderer(), "p/", 5, clock=clock,
                      hot=MemoryCache(10**7), hot_max_age=10)  # fmt: skip
    clock.now = 1_800_000_000.5
    rendered = await svc.get_tile(request(layer, 47790, 68245))
    assert (rendered.source, rendered.modified) == ("render", 1_800_000_000.5)
    clock.now += 30
    hot = await svc.get_tile(request(layer, 47791, 68246))
    assert (hot.source, hot.modified) == ("hot", 1_800_000_000)  # whole seconds once stored
    cold = TileService(ResilientCache(cache), FakeRenderer(), "p/", 5, clock=clock)
    cached = await cold.get_tile(request(layer, 47791, 68246))
    assert (cached.source, cached.modified) == ("memory", 1_800_000_000)
    # An entry without a stamp (an older version wrote it): its time is unknown.
    part = layer_key_part(layer.name, "default", ("a",), layer.grid.name)
    await cache.set_many({tile_key("p/", part, TileCoord(17, 47791, 68247)): b"old"}, 60)
    unknown = await cold.get_tile(request(layer, 47791, 68247))
    assert (unknown.data, unknown.modified) == (b"old", None)


def store_layer(tmp_path: Path, folder: Path, **options: Any) -> Layer:
    mapfile = tmp_path / "style.xml"
    mapfile.write_text("<Map/>")
    config = parse_config(
        {
            "grids": {"g": mercator_grid(20)},
            "caches": {"tiles": {"type": "filesystem", "folder": str(folder)}},
            "layers": {"l": {"type": "mapnik", "mapfile": str(mapfile), "grid": "g",
                             "cache": "tiles", "min_resolution_seed": 1.0, **options}},
        },
        tmp_path,
    )  # fmt: skip
    return config.layers["l"]


async def test_a_stored_tile_is_dated_by_its_store_and_keeps_no_render_time(
    tmp_path: Path,
) -> None:
    store = FilesystemStore(tmp_path / "tiles")
    layer = store_layer(tmp_path, tmp_path / "tiles", expires=1, stale_while_revalidate=60)
    coord = TileCoord(17, 47790, 68245)
    path = tile_path("", "l", "default", (), "g", "17", coord.row, coord.col, "png")
    await store.put_many({path: b"stored"}, "image/png")
    stored_at = 1_700_000_000.25  # long before: a render time, it would make the tile stale
    os.utime(tmp_path / "tiles" / path, (stored_at, stored_at))
    svc = TileService(ResilientCache(MemoryCache(10**8)), FakeRenderer(), "p/", 5,
                      stores={"tiles": store}, hot=MemoryCache(10**7), hot_max_age=10)  # fmt: skip
    tile = await svc.get_tile(TileRequest(layer, "default", (), coord))
    assert (tile.data, tile.source, tile.modified) == (b"stored", "store", stored_at)
    assert tile.rendered_at is None  # freshness counts from no render: a stored tile is fresh
    hot = await svc.get_tile(TileRequest(layer, "default", (), coord))
    assert (hot.data, hot.source, hot.modified, hot.rendered_at) == (
        b"stored", "hot", 1_700_000_000, None,
    )  # fmt: skip
