"""Unit tests of tileserver.services.cache_ring: per-server health on a consistent-hash
ring, failover of a dead server's keys only, and the in-process fallback."""

from __future__ import annotations

import logging

import pytest

from tests.support.fakes import ManualClock
from tests.unit.test_resilient_cache import FlakyCache
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.errors import CacheUnavailable
from tileserver.hashring import HashRing
from tileserver.services.cache_ring import CacheRing
from tileserver.services.resilient_cache import ResilientCache

RETRY = 2.0
KEYS = [f"p/l/default/g/17/{47000 + i // 50}/{68000 + i % 50}" for i in range(600)]
ADDRESSES = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def servers() -> list[FlakyCache]:
    return [FlakyCache() for _ in ADDRESSES]


@pytest.fixture
def ring(servers: list[FlakyCache], clock: ManualClock) -> CacheRing:
    nodes = [ResilientCache(s, RETRY, clock=clock, address=a)
             for s, a in zip(servers, ADDRESSES, strict=True)]  # fmt: skip
    return CacheRing(nodes, ResilientCache(MemoryCache(10**7), clock=clock))


def home(key: str) -> int:
    """The index of the server a key lives on when all are up."""
    return ADDRESSES.index(HashRing([(a, a) for a in ADDRESSES]).node_for(key))


async def test_keys_live_on_their_own_server_while_all_are_up(
    ring: CacheRing, servers: list[FlakyCache]
) -> None:
    assert await ring.set_many({k: k.encode() for k in KEYS}, ttl=60, stamp=7) is True
    for key in KEYS:
        assert [key in s.items for s in servers] == [i == home(key) for i in range(3)]
    found = await ring.get_many(KEYS)
    assert {k: e.value for k, e in found.items()} == {k: k.encode() for k in KEYS}
    assert ring.available and ring.degraded() == {}
    assert ring.states() == dict.fromkeys(ADDRESSES, "up")


async def test_a_dead_server_costs_only_its_own_keys(
    ring: CacheRing, servers: list[FlakyCache], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tileserver.cache")
    await ring.set_many({k: k.encode() for k in KEYS}, ttl=60)
    servers[1].down = True
    servers[1].calls = 0
    found = await ring.get_many(KEYS)
    # The live servers answered all of theirs; the dead one's keys were asked of the
    # server they fail over to (a miss there, this once), in the same call.
    assert set(found) == {k for k in KEYS if home(k) != 1}
    assert servers[1].calls == 1  # one command found it dead; none since
    assert sum(k in s.items for s in (servers[0], servers[2]) for k in KEYS) == len(found)
    # Their tiles are stored on the others now, spread over both.
    dead = [k for k in KEYS if home(k) == 1]
    await ring.set_many({k: b"again" for k in dead}, ttl=60)
    heirs = [sum(k in servers[i].items for k in dead) for i in (0, 2)]
    assert sum(heirs) == len(dead) and min(heirs) > len(dead) / 5, heirs
    assert {e.value for e in (await ring.get_many(dead)).values()} == {b"again"}
    assert servers[1].calls == 1
    assert not ring.available
    [degraded] = ring.degraded().items()
    assert degraded[0] == f"tile cache flaky {ADDRESSES[1]}"
    assert "the next live server on the ring (2 of 3 up)" in degraded[1]
    assert ring.states()[ADDRESSES[1]].startswith("down for 0 s: connection refused")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and f"flaky unavailable at {ADDRESSES[1]}" in warnings[0]


async def test_a_server_back_gets_its_keys_back_and_is_logged_once_each_way(
    ring: CacheRing, servers: list[FlakyCache], clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="tileserver.cache")
    servers[1].down = True
    for _ in range(5):  # retries that fail: no new line (no flapping)
        await ring.get_many(KEYS)
        clock.advance(RETRY)
    servers[1].down = False
    await ring.probe()
    assert ring.available
    await ring.set_many({k: b"v" for k in KEYS}, ttl=60)
    assert all(k in servers[1].items for k in KEYS if home(k) == 1)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert f"flaky is back at {ADDRESSES[1]} after 10.0 s" in messages[1]


async def test_keys_go_to_the_in_process_cache_when_no_server_answers(
    ring: CacheRing, servers: list[FlakyCache], clock: ManualClock
) -> None:
    for server in servers:
        server.down = True
    await ring.get_many(KEYS[:30])  # finds them down
    assert await ring.set_many({"k": b"local"}, ttl=60, stamp=5) is True
    found = await ring.get_many(["k"])
    assert found["k"].value == b"local" and found["k"].source == "memory"
    assert all(
        "in-process memory cache (no server answers)" in text for text in ring.degraded().values()
    )
    # A lock goes there too: it still coalesces the renders of this process.
    assert await ring.add("lock", b"1", ttl=5) is True
    assert await ring.add("lock", b"1", ttl=5) is False
    # The servers answer again: used at once (after the retry interval), not the fallback.
    for server in servers:
        server.down = False
    clock.advance(RETRY)
    assert await ring.get_many(["k"]) == {}
    await ring.probe()
    assert ring.available


async def test_delete_many_deletes_everywhere_a_key_may_be_or_fails(
    ring: CacheRing, servers: list[FlakyCache]
) -> None:
    items = {k: b"v" for k in KEYS[:60]}
    await ring.set_many(items, ttl=60)
    servers[1].down = True
    await ring.set_many({k: b"w" for k in items}, ttl=60)  # the dead one's go elsewhere
    with pytest.raises(CacheUnavailable):  # an invalidation never skips a server
        await ring.delete_many(list(items))
    servers[1].down = False
    # The live servers' keys went at the first attempt; the dead one's are left.
    assert await ring.delete_many(list(items)) == sum(home(k) == 1 for k in items)
    assert not any(k in s.items for s in servers for k in items)
    assert await ring.get_many(list(items)) == {}


async def test_a_ring_without_servers_is_the_in_process_cache() -> None:
    ring = CacheRing([], ResilientCache(MemoryCache(10**6)))
    assert ring.name == "memory" and ring.available and ring.states() == {}
    await ring.set_many({"a": b"1"}, ttl=60)
    assert (await ring.get_many(["a"]))["a"].value == b"1"
    assert await ring.delete_many(["a", "b"]) == 1
