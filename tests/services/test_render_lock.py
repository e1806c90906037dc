"""Unit tests of tileserver.services.render_lock: leases with an owner and a deadline."""

from __future__ import annotations

import asyncio

from tests.support.fakes import ManualClock
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.services.render_lock import CLOCK_SKEW, RenderLocks, lock_deadline, lock_value
from tileserver.services.resilient_cache import ResilientCache


def test_a_lock_value_carries_its_owner_and_deadline() -> None:
    value = lock_value("host:42", 1_800_000_005.25)
    assert value == b"host:42 1800000005.250"
    assert lock_deadline(value) == 1_800_000_005.25
    assert lock_deadline(b"1") is None  # an older version's lock: no deadline
    assert lock_deadline(b"host:42 soon") is None


def test_a_lock_is_stale_once_its_deadline_and_the_clock_skew_have_passed() -> None:
    clock = ManualClock()
    locks = RenderLocks(ResilientCache(MemoryCache(10**6)), lease=5, owner="me:1", clock=clock)
    value = locks.value()
    assert lock_deadline(value) == clock.now + 5
    clock.now += 5 + CLOCK_SKEW
    assert not locks.is_stale(value)
    clock.now += 0.01
    assert locks.is_stale(value)
    assert not locks.is_stale(b"1")  # without a deadline: left to its TTL


async def test_a_lease_is_exclusive_renewed_while_held_and_released() -> None:
    cache = ResilientCache(MemoryCache(10**6))
    locks = RenderLocks(cache, lease=0.3, owner="me:1")
    assert locks.ttl == 1  # whole seconds in Memcached
    lease = await locks.acquire("lock")
    assert lease is not None
    assert await locks.acquire("lock") is None
    async with lease:
        first = (await cache.get_many(["lock"]))["lock"].value
        await asyncio.sleep(0.35)  # at least one renewal (every lease / 3)
        renewed = (await cache.get_many(["lock"]))["lock"].value
        assert (lock_deadline(renewed) or 0) > (lock_deadline(first) or 0)
    assert await cache.get_many(["lock"]) == {}
    assert await locks.acquire("lock") is not None
