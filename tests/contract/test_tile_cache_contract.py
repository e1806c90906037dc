"""One contract every TileCache backend passes: the embedded LRU, Memcached and Redis (one
server, two with consistent hashing, and the master named by a Redis Sentinel)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from tests.support.daemons import Memcached, freeze
from tests.support.redis import RedisSentinel, RedisServer
from tests.support.waiting import async_wait_until
from tileserver.adapters.memcached import DELETE_BATCH, MemcachedCache
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.adapters.redis_cache import RedisCache
from tileserver.config import MemcachedConfig, RedisCacheConfig
from tileserver.errors import CacheTimeout, CacheUnavailable
from tileserver.protocols import TileCache
from tileserver.types import CacheEntry


@pytest.fixture(scope="module")
def daemons() -> Iterator[list[Memcached]]:
    started = [Memcached(), Memcached()]
    for daemon in started:
        daemon.start()
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="module")
def redis_servers() -> Iterator[list[RedisServer]]:
    started = [RedisServer(), RedisServer()]
    for server in started:
        server.start()
    sentinel = RedisSentinel(started[0])
    sentinel.start()
    started[0].sentinel = sentinel  # type: ignore[attr-defined]
    yield started
    sentinel.stop()
    for server in started:
        server.stop()


def redis_config(servers: list[RedisServer], kind: str, **options: Any) -> RedisCacheConfig:
    if kind == "redis":
        return RedisCacheConfig(url=f"redis://127.0.0.1:{servers[0].port}/3", **options)
    if kind == "redis-x2":
        return RedisCacheConfig(servers=tuple(("127.0.0.1", s.port) for s in servers), **options)
    sentinel = servers[0].sentinel  # type: ignore[attr-defined]
    return RedisCacheConfig(sentinels=(("127.0.0.1", sentinel.port),), service_name="tiles",
                            db=4, **options)  # fmt: skip


# The command budget of the contract's caches. The default (1 s) is a production latency
# policy, tested on its own below against paused and silent daemons; here a machine busy
# with other work must not turn a late answer into CacheTimeout. A hang still fails.
BUDGET = 10.0


@pytest.fixture(
    params=["memory", "memcached", "memcached-x2", "redis", "redis-x2", "redis-sentinel"]
)
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[TileCache]:
    backend: TileCache
    if request.param == "memory":
        backend = MemoryCache(64 * 1024 * 1024)
    elif request.param.startswith("redis"):
        servers = request.getfixturevalue("redis_servers")
        for server in servers:
            assert "OK" in server.command("FLUSHALL")
        backend = RedisCache(redis_config(servers, request.param, timeout=BUDGET))
    else:
        daemons = request.getfixturevalue("daemons")
        used = daemons[:1] if request.param == "memcached" else daemons
        for daemon in used:
            daemon.flush_all()
        servers = tuple(("127.0.0.1", d.port) for d in used)
        backend = MemcachedCache(MemcachedConfig(servers=servers, prefix="c/", timeout=BUDGET))
    yield backend
    await backend.close()


def values(found: Mapping[str, CacheEntry]) -> dict[str, bytes]:
    return {key: entry.value for key, entry in found.items()}


def tiles(n: int, size: int = 5000) -> dict[str, bytes]:
    return {f"c/layer/default/g/17/{i}/{i * 7}": os.urandom(size) for i in range(n)}


async def test_set_many_then_get_many_returns_every_value(cache: TileCache) -> None:
    items = tiles(64)
    await cache.set_many(items, ttl=60)
    assert values(await cache.get_many(list(items))) == items


async def test_missing_keys_are_absent(cache: TileCache) -> None:
    items = tiles(3)
    await cache.set_many(items, ttl=60)
    keys = [*items, "c/nothing/here"]
    found = await cache.get_many(keys)
    assert set(found) == set(items)
    assert values(await cache.get_many([])) == {}


async def test_binary_values_survive_byte_for_byte(cache: TileCache) -> None:
    value = b"\r\nEND\r\nVALUE x 0 1\r\n\x00\xff" * 100
    await cache.set_many({"c/binary": value, "c/empty": b""}, ttl=60)
    assert values(await cache.get_many(["c/binary", "c/empty"])) == {
        "c/binary": value,
        "c/empty": b"",
    }


async def test_each_value_carries_the_stamp_it_was_set_with(cache: TileCache) -> None:
    """The render time of a tile: a Unix time in whole seconds (Memcached's 32-bit flags)."""
    rendered = int(time.time())
    await cache.set_many({"c/a": b"A", "c/b": b"B"}, ttl=60, stamp=rendered)
    await cache.set_many({"c/late": b"L"}, ttl=60, stamp=2**32 - 1)  # 2106, the last one
    await cache.set_many({"c/unknown": b"U"}, ttl=60)
    found = await cache.get_many(["c/a", "c/b", "c/late", "c/unknown"])
    assert {k: (e.value, e.stamp) for k, e in found.items()} == {
        "c/a": (b"A", rendered), "c/b": (b"B", rendered), "c/late": (b"L", 2**32 - 1),
        "c/unknown": (b"U", 0),
    }  # fmt: skip
    assert {e.source for e in found.values()} == {cache.name}
    await cache.set_many({"c/a": b"A2"}, ttl=60, stamp=rendered + 5)  # rendered again
    assert (await cache.get_many(["c/a"]))["c/a"].stamp == rendered + 5


async def test_add_is_a_lock(cache: TileCache) -> None:
    assert await cache.add("c/#lock/a", b"1", ttl=60) is True
    assert await cache.add("c/#lock/a", b"1", ttl=60) is False
    await cache.delete("c/#lock/a")
    assert await cache.add("c/#lock/a", b"1", ttl=60) is True


async def test_only_one_of_many_concurrent_adds_wins(cache: TileCache) -> None:
    results = await asyncio.gather(*(cache.add("c/#lock/race", b"1", 60) for _ in range(20)))
    assert results.count(True) == 1


async def test_values_expire_after_their_ttl(cache: TileCache) -> None:
    if isinstance(cache, MemoryCache):
        # The embedded cache is driven by a clock; check it with a fake one.
        now = [0.0]
        cache = MemoryCache(1024 * 1024, clock=lambda: now[0])
        await cache.set_many({"c/short": b"x"}, ttl=1)
        now[0] = 2.0
    else:
        await cache.set_many({"c/short": b"x"}, ttl=1)

        # memcached's clock ticks once a second, late on a busy machine: wait for the
        # expiry to show.
        async def expired() -> bool:
            return not await cache.get_many(["c/short"])

        await async_wait_until(expired, "the item to expire", interval=0.1)
    assert values(await cache.get_many(["c/short"])) == {}
    assert await cache.add("c/short", b"y", ttl=60) is True


async def test_ttls_beyond_thirty_days_are_kept(cache: TileCache) -> None:
    # memcached reads an expiry over 30 days as a Unix time: sent as such, it would
    # expire the item at once.
    forty_days = 40 * 24 * 3600
    await cache.set_many({"c/long": b"kept"}, ttl=forty_days)
    assert await cache.add("c/long-lock", b"1", ttl=forty_days) is True
    assert values(await cache.get_many(["c/long", "c/long-lock"])) == {
        "c/long": b"kept",
        "c/long-lock": b"1",
    }


async def test_delete_of_a_missing_key_is_fine(cache: TileCache) -> None:
    await cache.delete("c/never/set")
    assert values(await cache.get_many(["c/never/set"])) == {}


async def test_delete_many_deletes_the_keys_and_counts_those_that_were_there(
    cache: TileCache,
) -> None:
    items = tiles(10, size=100)
    await cache.set_many(items, ttl=60)
    keys = list(items)
    gone = [*keys[:6], "c/never/set", "c/never/set/either", keys[0]]
    assert await cache.delete_many(gone) == 6  # a key repeated is gone the second time
    assert values(await cache.get_many(keys)) == {k: items[k] for k in keys[6:]}
    assert await cache.delete_many(gone) == 0
    assert await cache.delete_many([]) == 0
    assert values(await cache.get_many(keys)) == {k: items[k] for k in keys[6:]}


async def test_delete_many_of_thousands_of_keys_over_two_memcached_servers(
    daemons: list[Memcached],
) -> None:
    """More keys per server than one pipelined write (DELETE_BATCH) takes."""
    for daemon in daemons:
        daemon.flush_all()
    servers = tuple(("127.0.0.1", d.port) for d in daemons)
    cache = MemcachedCache(MemcachedConfig(servers=servers, prefix="c/", timeout=BUDGET))
    items = {f"c/l/default/g/20/{i}/{i}": b"x" for i in range(3 * DELETE_BATCH)}
    keys = list(items)
    await cache.set_many(items, ttl=60)
    per_server = [sum(1 for k in keys if d.get(k) is not None) for d in daemons]
    assert min(per_server) > DELETE_BATCH, per_server
    missing = [f"c/missing/{i}" for i in range(300)]
    assert await cache.delete_many(keys[:-7] + missing) == len(keys) - 7
    assert values(await cache.get_many(keys)) == {k: b"x" for k in keys[-7:]}
    await cache.close()


async def test_keys_spread_over_two_memcached_servers(daemons: list[Memcached]) -> None:
    for daemon in daemons:
        daemon.flush_all()
    servers = tuple(("127.0.0.1", d.port) for d in daemons)
    cache = MemcachedCache(MemcachedConfig(servers=servers, prefix="c/", timeout=BUDGET))
    items = tiles(64, size=100)
    await cache.set_many(items, ttl=60)
    # Which daemon holds each key (curr_items would still count flushed items).
    counts = [sum(1 for key in items if d.get(key) is not None) for d in daemons]
    assert sum(counts) == 64
    assert min(counts) >= 10, counts
    assert values(await cache.get_many(list(items))) == items
    await cache.close()


async def test_dead_memcached_raises_cache_unavailable(closed_port: int) -> None:
    cache = MemcachedCache(MemcachedConfig(servers=(("127.0.0.1", closed_port),), timeout=0.5))
    with pytest.raises(CacheUnavailable):
        await cache.get_many(["c/a"])
    with pytest.raises(CacheUnavailable):
        await cache.set_many({"c/a": b"1"}, ttl=60)
    with pytest.raises(CacheUnavailable):
        await cache.add("c/a", b"1", ttl=60)
    with pytest.raises(CacheUnavailable):
        await cache.delete_many(["c/a", "c/b"])
    assert await cache.ping() == []
    await cache.close()


async def test_a_timed_out_command_never_desynchronises_the_connection() -> None:
    """A frozen memcached times out; afterwards every key reads back its own value."""
    daemon = Memcached()
    daemon.start()
    try:
        cache = MemcachedCache(
            MemcachedConfig(servers=(("127.0.0.1", daemon.port),), timeout=0.3, pool_size=2)
        )
        items = {f"c/k{i}": f"value-{i}".encode() * 50 for i in range(20)}
        await cache.set_many(items, ttl=60)
        gets_before = daemon.stats()["cmd_get"]
        assert daemon.proc is not None
        freeze(daemon.proc.pid)
        try:
            for key in list(items)[:4]:
                with pytest.raises(CacheUnavailable):
                    await cache.get_many([key])
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        # The replies to the timed-out gets arrive now; they must not be read as answers.
        # Wait until memcached has answered them all (its count of gets says so).
        await async_wait_until(
            lambda: daemon.stats()["cmd_get"] >= gets_before + 4, "memcached's late answers"
        )
        for key, value in items.items():
            assert values(await cache.get_many([key])) == {key: value}
        await cache.close()
    finally:
        daemon.stop()


class _RecordingProxy:
    """A TCP proxy in front of a memcached: records every byte the client sends."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.sent = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            while data := await src.read(65536):
                if record:
                    self.sent += data
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False),
                             return_exceptions=True)  # fmt: skip

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            await writer.wait_closed()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_the_gets_of_one_event_loop_iteration_are_one_multi_get(
    daemons: list[Memcached],
) -> None:
    """50 concurrent requests for tiles: one `get` command with every key, each request
    answered with its own entries, on one connection."""
    daemons[0].flush_all()
    proxy = _RecordingProxy(daemons[0].port)
    await proxy.start()
    cache = MemcachedCache(
        MemcachedConfig(servers=(("127.0.0.1", proxy.port),), prefix="c/", timeout=BUDGET)
    )
    try:
        items = tiles(40, size=300)
        await cache.set_many(items, ttl=60)
        proxy.sent.clear()
        keys = list(items)
        asked = [[keys[i % 40], f"c/missing/{i}"] for i in range(50)]
        answers = await asyncio.gather(*(cache.get_many(k) for k in asked))
        for wanted, found in zip(asked, answers, strict=True):
            assert values(found) == {wanted[0]: items[wanted[0]]}
        commands = bytes(proxy.sent).split(b"\r\n")
        assert commands[-1] == b""
        gets = [c for c in commands[:-1] if c.startswith(b"get ")]
        assert len(gets) == 1, commands[:5]
        assert sorted(gets[0].split()[1:]) == sorted({k.encode() for pair in asked for k in pair})
    finally:
        await cache.close()
        await proxy.close()


async def test_commands_are_pipelined_each_with_its_own_answer(daemons: list[Memcached]) -> None:
    """On a single connection, gets written behind a large set, and adds and deletes
    sent meanwhile, all get their own replies. (Concurrent commands go out in any order:
    the gets at the end of the event-loop iteration.)"""
    daemons[0].flush_all()
    servers = (("127.0.0.1", daemons[0].port),)
    cache = MemcachedCache(
        MemcachedConfig(servers=servers, prefix="c/", pool_size=1, timeout=BUDGET)
    )
    try:
        big = tiles(64, size=20000)
        await cache.set_many({"c/first": b"1", "c/second": b"2"}, ttl=60)
        results = await asyncio.gather(
            cache.set_many(big, ttl=60),
            cache.get_many(["c/first"]),
            cache.add("c/#lock/p", b"x", ttl=60),
            cache.add("c/#lock/p", b"x", ttl=60),
            cache.get_many(list(big)[:3]),
            cache.delete("c/second"),
        )
        assert values(results[1]) == {"c/first": b"1"}
        assert (results[2], results[3]) == (True, False)
        assert values(results[4]) == {k: big[k] for k in list(big)[:3]}  # written before
        assert values(await cache.get_many(list(big))) == big
        assert values(await cache.get_many(["c/first", "c/second"])) == {"c/first": b"1"}
    finally:
        await cache.close()


async def test_a_frozen_memcached_times_out_each_command_within_its_budget() -> None:
    """A command's budget counts from its own write: commands sent while memcached is
    frozen fail with CacheTimeout, and it answers again once it is resumed."""
    daemon = Memcached()
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    try:
        cache = MemcachedCache(
            MemcachedConfig(servers=(("127.0.0.1", daemon.port),), timeout=0.5, pool_size=1)
        )
        await cache.set_many({"c/k": b"v"}, ttl=60)
        freeze(pid)
        try:
            with pytest.raises(
                CacheTimeout, match=r"get: no answer from 127\.0\.0\.1:\d+ in 0\.5 s"
            ):
                await cache.get_many(["c/k"])
            failures = await asyncio.gather(
                cache.get_many(["c/k"]), cache.add("c/l", b"1", 60), return_exceptions=True
            )
            assert all(isinstance(f, CacheTimeout) for f in failures), failures
        finally:
            os.kill(pid, signal.SIGCONT)
        assert values(await cache.get_many(["c/k"])) == {"c/k": b"v"}
        await cache.close()
    finally:
        daemon.stop()


# --- Redis ----------------------------------------------------------------------------------


async def test_redis_keys_spread_over_two_servers_and_expire(
    redis_servers: list[RedisServer],
) -> None:
    for server in redis_servers:
        server.command("FLUSHALL")
    cache = RedisCache(redis_config(redis_servers, "redis-x2", timeout=BUDGET))
    items = tiles(64, size=100)
    await cache.set_many(items, ttl=300)
    counts = [int(s.command("DBSIZE").strip().lstrip(":")) for s in redis_servers]
    assert sum(counts) == 64
    assert min(counts) >= 10, counts
    # Every key has the layer's TTL where it is (-2: not on that server).
    ttls = [int(s.command("TTL", key).strip().lstrip(":")) for s in redis_servers for key in items]
    assert sorted(ttls)[:64] == [-2] * 64
    assert all(290 < ttl <= 300 for ttl in sorted(ttls)[64:])
    assert await cache.ping() == cache.addresses
    await cache.close()


async def test_a_redis_value_without_the_stamp_header_is_read_with_stamp_0(
    redis_servers: list[RedisServer],
) -> None:
    """A value another program wrote (or an older tileserver) is the value, stamp unknown."""
    server = redis_servers[0]
    assert "OK" in server.command("SET", "c/foreign", "plain")  # in database 0
    cache = RedisCache(RedisCacheConfig(url=f"redis://127.0.0.1:{server.port}/0"))
    found = await cache.get_many(["c/foreign"])
    assert {k: (e.value, e.stamp, e.source) for k, e in found.items()} == {
        "c/foreign": (b"plain", 0, "redis")
    }
    await cache.close()


async def test_dead_redis_raises_cache_unavailable(closed_port: int) -> None:
    cache = RedisCache(RedisCacheConfig(url=f"redis://127.0.0.1:{closed_port}/0", timeout=0.5))
    started = time.monotonic()
    for operation in (
        lambda: cache.get_many(["c/a"]),
        lambda: cache.set_many({"c/a": b"1"}, ttl=60),
        lambda: cache.add("c/a", b"1", ttl=60),
        lambda: cache.delete("c/a"),
        lambda: cache.delete_many(["c/a", "c/b"]),
    ):
        with pytest.raises(CacheUnavailable):
            await operation()
    assert time.monotonic() - started < 5 * 1.5  # each within its budget
    assert await cache.ping() == []
    await cache.close()


async def test_a_frozen_redis_times_out_and_every_key_reads_back_its_own_value() -> None:
    server = RedisServer()
    server.start()
    try:
        cache = RedisCache(RedisCacheConfig(url=server.url, timeout=0.3, pool_size=2))
        items = {f"c/k{i}": f"value-{i}".encode() * 50 for i in range(20)}
        await cache.set_many(items, ttl=60)
        assert server.proc is not None
        freeze(server.proc.pid)
        try:
            for key in list(items)[:4]:
                with pytest.raises(CacheTimeout):
                    await cache.get_many([key])
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        # The answers to the timed-out commands arrive now: never read as later answers.
        for key, value in items.items():
            assert values(await cache.get_many([key])) == {key: value}
        server.kill()
        with pytest.raises(CacheUnavailable):
            await cache.get_many(["c/k1"])
        await cache.close()
    finally:
        server.stop()
