"""Redis as the on-demand tile cache (`redis_cache`), over redis.asyncio.

The same contract as Memcached's: values expire after their TTL (SET ... EX), a
metatile's tiles are written in one pipelined round trip per server, the render lock is
SET NX EX (taken by one process, renewed by its holder, released by DEL or by its
expiry). A tile's render time, which Memcached keeps in an item's flags, travels in a
12-byte header before the value (`TSv1` and the stamp), so one GET reads both.

`RedisNode` is one server: a `url`'s, one of `servers`, or the master that Redis Sentinel
names (`sentinels`, `service_name`), found again after a failover. The tile server puts
each behind its own health tracking (`services.cache_ring`), as it does Memcached's
servers. `RedisCache` spreads keys over every node by consistent hashing, for the
commands that need every server to answer (`generate_tiles --update`).

Each command waits at most `timeout` for one of the node's `pool_size` slots and
`timeout` more per round trip (two budgets, as for Memcached); a connection interrupted
mid-command is closed by redis-py, never reused with an unread answer. Failures are
raised as `CacheUnavailable`, `CacheTimeout` when the server did not answer in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.sentinel import Sentinel

from tileserver.adapters.sharded_cache import ShardedCache
from tileserver.config import RedisCacheConfig
from tileserver.errors import CacheTimeout, CacheUnavailable
from tileserver.types import CacheEntry

DELETE_BATCH = 1000  # keys per DEL command
_MAGIC = b"TSv1"  # a value's header: _MAGIC, then the stamp (8 bytes, big-endian)
_HEADER = len(_MAGIC) + 8


def encode(value: bytes, stamp: int) -> bytes:
    return _MAGIC + max(0, stamp).to_bytes(8, "big") + value


def decode(raw: bytes) -> tuple[bytes, int]:
    """(value, stamp) of a stored value; a value without the header (written by another
    program) has stamp 0."""
    if len(raw) >= _HEADER and raw.startswith(_MAGIC):
        return raw[_HEADER:], int.from_bytes(raw[len(_MAGIC) : _HEADER], "big")
    return raw, 0


class RedisNode:
    """One Redis server: a TileCache of its own."""

    name = "redis"

    def __init__(
        self, address: str, client: Any, config: RedisCacheConfig,
        sentinel: Sentinel | None = None,
    ) -> None:  # fmt: skip
        self.address = address
        self._client = client
        self._sentinel = sentinel
        self.timeout = config.timeout
        self.pool_size = config.pool_size
        self._slots: asyncio.Semaphore | None = None  # commands in flight

    def __repr__(self) -> str:
        return f"redis {self.address}"

    @asynccontextmanager
    async def _guard(self, what: str, round_trips: int = 1) -> AsyncIterator[None]:
        """One command: `timeout` to get one of the `pool_size` slots, then `timeout` per
        round trip (connecting included); failures as CacheUnavailable."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pool_size)
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise CacheTimeout(
                f"redis {what}: no free connection to {self.address} in {self.timeout:g} s "
                f"({self.pool_size} in use)"
            ) from exc
        try:
            async with asyncio.timeout(self.timeout * round_trips):
                yield
        except (TimeoutError, redis.exceptions.TimeoutError) as exc:
            raise CacheTimeout(f"redis {what}: no answer from {self.address} in time") from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise CacheUnavailable(f"redis {what} on {self.address}: {reason}") from exc
        finally:
            self._slots.release()

    async def ping(self) -> bool:
        try:
            async with self._guard("ping"):
                return bool(await self._client.ping())
        except CacheUnavailable:
            return False

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        async with self._guard("get"):
            raws = await self._client.mget(unique)
        found = {}
        for key, raw in zip(unique, raws, strict=True):
            if raw is not None:
                value, stamp = decode(bytes(raw))
                found[key] = CacheEntry(value, stamp, self.name)
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> None:
        if not items:
            return
        async with self._guard("set"):
            pipe = self._client.pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(key, encode(value, stamp), ex=ttl)
            await pipe.execute()

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        async with self._guard("add"):
            return bool(await self._client.set(key, encode(value, 0), ex=ttl, nx=True))

    async def delete(self, key: str) -> None:
        async with self._guard("delete"):
            await self._client.delete(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Pipelined: DEL commands of DELETE_BATCH keys, in one round trip each."""
        if not keys:
            return 0
        unique = list(dict.fromkeys(keys))
        batches = [unique[i : i + DELETE_BATCH] for i in range(0, len(unique), DELETE_BATCH)]
        async with self._guard("delete", len(batches)):
            pipe = self._client.pipeline(transaction=False)
            for batch in batches:
                pipe.delete(*batch)
            counts = await pipe.execute()
        return sum(int(c) for c in counts)

    async def close(self) -> None:
        await self._client.aclose()
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()


def _pool_options(config: RedisCacheConfig) -> dict[str, Any]:
    # No max_connections: the node's slots bound the commands in flight, and the wait for
    # a free one (redis-py's plain pools fail at once when exhausted).
    return {"socket_timeout": config.timeout, "socket_connect_timeout": config.timeout}


def nodes_of(config: RedisCacheConfig) -> list[RedisNode]:
    """One node per server of the configuration (a url's, each of `servers`, or the
    master the sentinels name)."""
    if config.sentinels:
        sentinel = Sentinel(
            list(config.sentinels),
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
        )
        client = sentinel.master_for(
            config.service_name,
            db=config.db,
            password=config.password or None,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
        )
        where = ",".join(f"{h}:{p}" for h, p in config.sentinels)
        return [RedisNode(f"sentinel {where} master {config.service_name}", client, config,
                          sentinel)]  # fmt: skip
    if config.url:
        pool = redis.asyncio.ConnectionPool.from_url(config.url, **_pool_options(config))
        url = urlsplit(config.url)  # its address without scheme nor password, as in messages
        address = url.path if url.scheme == "unix" else url.netloc.rpartition("@")[2] + url.path
        return [RedisNode(address, redis.asyncio.Redis.from_pool(pool), config)]
    return [
        RedisNode(
            f"{host}:{port}",
            redis.asyncio.Redis.from_pool(
                redis.asyncio.ConnectionPool(
                    host=host,
                    port=port,
                    db=config.db,
                    password=config.password or None,
                    **_pool_options(config),
                )
            ),
            config,
        )
        for host, port in config.servers
    ]


class RedisCache(ShardedCache[RedisNode]):
    """Every redis server of the configuration as one TileCache (`sharded_cache`)."""

    name = "redis"

    def __init__(self, config: RedisCacheConfig) -> None:
        super().__init__(nodes_of(config))
