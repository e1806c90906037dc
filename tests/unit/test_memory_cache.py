"""Unit tests of tileserver.adapters.memory_cache: TTL, add, LRU bound in bytes, delete."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.support.fakes import ManualClock
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.types import CacheEntry


def values(found: Mapping[str, CacheEntry]) -> dict[str, bytes]:
    return {key: entry.value for key, entry in found.items()}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def cache(clock: ManualClock) -> MemoryCache:
    return MemoryCache(max_bytes=1_000_000, clock=clock)


async def test_get_returns_only_the_keys_found(cache: MemoryCache) -> None:
    await cache.set_many({"a": b"1", "b": b"22"}, ttl=60)
    assert values(await cache.get_many(["a", "b", "c"])) == {"a": b"1", "b": b"22"}
    assert values(await cache.get_many([])) == {}


@pytest.mark.parametrize(
    ("elapsed", "alive"),
    [(0, True), (59.999, True), (60, False), (61, False), (3600, False)],
)
async def test_items_expire_after_their_ttl(
    cache: MemoryCache, clock: ManualClock, elapsed: float, alive: bool
) -> None:
    await cache.set_many({"tile": b"png"}, ttl=60)
    clock.advance(elapsed)
    assert values(await cache.get_many(["tile"])) == ({"tile": b"png"} if alive else {})


async def test_each_item_keeps_its_own_ttl(cache: MemoryCache, clock: ManualClock) -> None:
    await cache.set_many({"short": b"s"}, ttl=10)
    clock.advance(5)
    await cache.set_many({"long": b"l"}, ttl=10)
    clock.advance(6)
    assert values(await cache.get_many(["short", "long"])) == {"long": b"l"}


async def test_set_replaces_the_value_and_restarts_the_ttl(
    cache: MemoryCache, clock: ManualClock
) -> None:
    await cache.set_many({"k": b"old"}, ttl=10)
    clock.advance(8)
    await cache.set_many({"k": b"new!"}, ttl=10)
    clock.advance(8)
    assert values(await cache.get_many(["k"])) == {"k": b"new!"}
    assert cache.size_bytes == len("k") + len(b"new!")


async def test_expired_items_free_their_bytes(cache: MemoryCache, clock: ManualClock) -> None:
    await cache.set_many({"k": b"x" * 100}, ttl=1)
    clock.advance(2)
    await cache.get_many(["k"])
    assert cache.size_bytes == 0


async def test_add_fails_when_the_key_is_present(cache: MemoryCache) -> None:
    assert await cache.add("lock", b"1", ttl=30) is True
    assert await cache.add("lock", b"2", ttl=30) is False
    assert values(await cache.get_many(["lock"])) == {"lock": b"1"}


async def test_add_fails_on_a_key_stored_with_set(cache: MemoryCache) -> None:
    await cache.set_many({"k": b"v"}, ttl=30)
    assert await cache.add("k", b"w", ttl=30) is False


async def test_add_succeeds_after_expiry(cache: MemoryCache, clock: ManualClock) -> None:
    assert await cache.add("lock", b"1", ttl=30) is True
    clock.advance(29)
    assert await cache.add("lock", b"2", ttl=30) is False
    clock.advance(1)
    assert await cache.add("lock", b"3", ttl=30) is True
    assert values(await cache.get_many(["lock"])) == {"lock": b"3"}


async def test_add_succeeds_after_delete(cache: MemoryCache) -> None:
    assert await cache.add("lock", b"1", ttl=30)
    await cache.delete("lock")
    assert await cache.add("lock", b"1", ttl=30)


async def test_delete(cache: MemoryCache) -> None:
    await cache.set_many({"a": b"1", "b": b"2"}, ttl=60)
    await cache.delete("a")
    await cache.delete("never-stored")
    assert values(await cache.get_many(["a", "b"])) == {"b": b"2"}
    assert cache.size_bytes == len("b") + 1


async def test_size_counts_keys_and_values(cache: MemoryCache) -> None:
    await cache.set_many({"ab": b"123", "c": b"45"}, ttl=60)
    assert cache.size_bytes == (2 + 3) + (1 + 2)


def _item(n: int) -> tuple[str, bytes]:
    return f"k{n}", b"v" * 98  # 100 bytes with its 2-character key


async def test_least_recently_used_is_evicted_under_the_byte_bound(clock: ManualClock) -> None:
    cache = MemoryCache(max_bytes=300, clock=clock)
    await cache.set_many(dict(_item(n) for n in range(3)), ttl=60)
    assert cache.size_bytes == 300
    await cache.get_many(["k0"])  # k0 used: k1 is now the least recently used
    await cache.set_many(dict([_item(3)]), ttl=60)
    assert set(await cache.get_many(["k0", "k1", "k2", "k3"])) == {"k0", "k2", "k3"}
    assert cache.size_bytes == 300


async def test_set_counts_as_use(clock: ManualClock) -> None:
    cache = MemoryCache(max_bytes=300, clock=clock)
    await cache.set_many(dict(_item(n) for n in range(3)), ttl=60)
    await cache.set_many(dict([_item(0)]), ttl=60)  # rewritten: k1 is the oldest
    await cache.set_many(dict([_item(3)]), ttl=60)
    assert set(await cache.get_many(["k0", "k1", "k2", "k3"])) == {"k0", "k2", "k3"}


async def test_a_large_item_evicts_as_many_items_as_needed(clock: ManualClock) -> None:
    cache = MemoryCache(max_bytes=300, clock=clock)
    await cache.set_many(dict(_item(n) for n in range(3)), ttl=60)
    await cache.set_many({"big": b"x" * 197}, ttl=60)  # 200 bytes
    assert set(await cache.get_many(["k0", "k1", "k2", "big"])) == {"k2", "big"}
    assert cache.size_bytes <= 300


async def test_an_item_larger_than_the_bound_is_not_stored(clock: ManualClock) -> None:
    cache = MemoryCache(max_bytes=300, clock=clock)
    await cache.set_many(dict([_item(0)]), ttl=60)
    await cache.set_many({"huge": b"x" * 400}, ttl=60)
    assert values(await cache.get_many(["k0", "huge"])) == {"k0": _item(0)[1]}
    assert cache.size_bytes == 100


async def test_close_empties_the_cache(cache: MemoryCache) -> None:
    await cache.set_many({"a": b"1"}, ttl=60)
    await cache.close()
    assert cache.size_bytes == 0
    assert values(await cache.get_many(["a"])) == {}


def test_name() -> None:
    assert MemoryCache(10).name == "memory"


async def test_delete_many_counts_only_the_live_keys(
    cache: MemoryCache, clock: ManualClock
) -> None:
    await cache.set_many({"short": b"1"}, ttl=10)
    await cache.set_many({"long": b"22", "other": b"333"}, ttl=60)
    clock.advance(20)
    assert await cache.delete_many(["short", "long", "missing"]) == 1  # "short" expired
    assert values(await cache.get_many(["short", "long", "other"])) == {"other": b"333"}
    assert cache.size_bytes == len("other") + 3
