"""Unit tests of tileserver.services.resilient_cache: serving through a cache outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import pytest

from tests.support.fakes import ManualClock
from tileserver.errors import CacheTimeout, CacheUnavailable
from tileserver.services.resilient_cache import ResilientCache
from tileserver.types import CacheEntry

RETRY = 2.0


def values(found: Mapping[str, CacheEntry]) -> dict[str, bytes]:
    return {key: entry.value for key, entry in found.items()}


class FlakyCache:
    """A dict-backed TileCache that raises CacheUnavailable while `down` is set."""

    name = "flaky"

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.items: dict[str, bytes] = {}
        self.closed = False

    def _call(self) -> None:
        self.calls += 1
        if self.down:
            raise CacheUnavailable("connection refused")

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        self._call()
        return {k: CacheEntry(self.items[k], 0, self.name) for k in keys if k in self.items}

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> None:
        self._call()
        self.items.update(items)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        self._call()
        if key in self.items:
            return False
        self.items[key] = value
        return True

    async def delete(self, key: str) -> None:
        self._call()
        self.items.pop(key, None)

    async def delete_many(self, keys: Sequence[str]) -> int:
        self._call()
        return sum(self.items.pop(k, None) is not None for k in keys)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def inner() -> FlakyCache:
    return FlakyCache()


@pytest.fixture
def cache(inner: FlakyCache, clock: ManualClock) -> ResilientCache:
    return ResilientCache(inner, retry_interval=RETRY, clock=clock)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tileserver.cache" and r.levelno == logging.WARNING
    ]


async def test_passes_calls_through_while_the_cache_is_up(
    cache: ResilientCache, inner: FlakyCache, caplog: pytest.LogCaptureFixture
) -> None:
    assert await cache.set_many({"a": b"1"}, ttl=60) is True
    assert values(await cache.get_many(["a", "b"])) == {"a": b"1"}
    assert await cache.add("lock", b"1", ttl=60) is True
    assert await cache.add("lock", b"1", ttl=60) is False
    await cache.delete("lock")
    assert "lock" not in inner.items
    assert inner.calls == 5
    assert cache.available
    assert cache.name == "flaky"
    assert warnings_of(caplog) == []


async def test_outage_turns_every_operation_into_its_harmless_answer(
    cache: ResilientCache, inner: FlakyCache, clock: ManualClock
) -> None:
    inner.items["a"] = b"1"
    inner.down = True
    answers = []
    # Each call after the retry interval reaches the cache and fails.
    for call in (
        cache.get_many(["a"]),
        cache.set_many({"b": b"2"}, ttl=60),
        cache.add("lock", b"1", ttl=60),
        cache.delete("a"),
    ):
        answers.append(await call)
        clock.advance(RETRY)
    assert answers == [{}, False, True, None]  # miss, not stored, lock granted, no-op
    assert inner.calls == 4
    assert cache.failures == 4
    assert not cache.available


@pytest.mark.parametrize("operation", ["get", "set", "add", "delete"])
async def test_one_warning_when_an_outage_starts_and_one_when_it_ends(
    cache: ResilientCache,
    inner: FlakyCache,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    operation: str,
) -> None:
    async def call() -> object:
        if operation == "get":
            return await cache.get_many(["k"])
        if operation == "set":
            return await cache.set_many({"k": b"v"}, ttl=60)
        if operation == "add":
            return await cache.add("k", b"v", ttl=60)
        return await cache.delete("k")

    caplog.set_level(logging.WARNING, logger="tileserver.cache")
    inner.down = True
    for _ in range(10):  # many failed retries, one outage
        await call()
        clock.advance(RETRY)
    assert len(warnings_of(caplog)) == 1
    assert "flaky unavailable" in warnings_of(caplog)[0]
    assert "connection refused" in warnings_of(caplog)[0]

    inner.down = False
    await call()
    await call()
    assert cache.available
    messages = warnings_of(caplog)
    assert len(messages) == 2
    assert "flaky is back after 20.0 s" in messages[1]


async def test_a_second_outage_is_logged_again(
    cache: ResilientCache, inner: FlakyCache, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tileserver.cache")
    for _ in range(2):
        inner.down = True
        await cache.get_many(["k"])
        clock.advance(RETRY)
        inner.down = False
        await cache.get_many(["k"])
    assert len(warnings_of(caplog)) == 4


async def test_the_inner_cache_is_skipped_during_the_retry_interval(
    cache: ResilientCache, inner: FlakyCache, clock: ManualClock
) -> None:
    inner.down = True
    assert values(await cache.get_many(["k"])) == {}
    assert inner.calls == 1
    for _ in range(5):
        clock.advance(RETRY / 10)
        assert values(await cache.get_many(["k"])) == {}
        assert await cache.set_many({"k": b"v"}, ttl=60) is False
        assert await cache.add("lock", b"1", ttl=60) is True
        await cache.delete("lock")
    assert inner.calls == 1  # none of the 20 calls reached the cache

    inner.down = False
    clock.advance(RETRY / 2)  # 1.5 x RETRY after the failure
    assert values(await cache.get_many(["k"])) == {}
    assert inner.calls == 2
    assert cache.available


async def test_retry_interval_restarts_after_each_failed_retry(
    cache: ResilientCache, inner: FlakyCache, clock: ManualClock
) -> None:
    inner.down = True
    await cache.get_many(["k"])
    clock.advance(RETRY)  # retry allowed: it fails again
    await cache.get_many(["k"])
    assert inner.calls == 2
    clock.advance(RETRY - 0.001)
    await cache.get_many(["k"])
    assert inner.calls == 2
    clock.advance(0.001)
    await cache.get_many(["k"])
    assert inner.calls == 3


async def test_no_items_are_lost_after_recovery(
    cache: ResilientCache, inner: FlakyCache, clock: ManualClock
) -> None:
    inner.down = True
    await cache.set_many({"k": b"v"}, ttl=60)
    inner.down = False
    clock.advance(RETRY)
    assert await cache.set_many({"k": b"v"}, ttl=60) is True
    assert values(await cache.get_many(["k"])) == {"k": b"v"}


async def test_close_closes_the_inner_cache(cache: ResilientCache, inner: FlakyCache) -> None:
    await cache.close()
    assert inner.closed


class SlowCache(FlakyCache):
    """Its `slow` key times out once `answer` is set; other keys answer at once."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        if "slow" in keys:
            await self.answer.wait()
            raise CacheTimeout("memcached get: no answer from 127.0.0.1:11211 in 1 s")
        return await super().get_many(keys)


async def test_a_timeout_while_other_commands_are_answered_is_a_miss_not_an_outage(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tileserver.cache")
    inner = SlowCache()
    cache = ResilientCache(inner, retry_interval=RETRY, clock=clock)
    slow = asyncio.create_task(cache.get_many(["slow"]))
    await asyncio.sleep(0)  # sent
    clock.advance(0.5)
    assert values(await cache.get_many(["k"])) == {}  # answered meanwhile
    clock.advance(0.5)
    inner.answer.set()
    assert await slow == {}  # a miss...
    assert cache.available  # ...but the cache stays in use
    assert cache.failures == 1
    assert warnings_of(caplog) == []
    await cache.get_many(["k"])
    assert inner.calls == 2  # not skipped


async def test_a_timeout_with_no_answer_since_it_was_sent_is_an_outage(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tileserver.cache")
    inner = SlowCache()
    cache = ResilientCache(inner, retry_interval=RETRY, clock=clock)
    assert values(await cache.get_many(["k"])) == {}  # an answer, before the slow command
    clock.advance(0.1)
    slow = asyncio.create_task(cache.get_many(["slow"]))
    await asyncio.sleep(0)
    clock.advance(1)
    inner.answer.set()
    assert await slow == {}
    assert not cache.available  # a hung server answers nobody: skipped at once
    assert "flaky unavailable (memcached get: no answer" in warnings_of(caplog)[0]
    await cache.get_many(["k"])
    assert inner.calls == 1  # the retry interval has not passed
