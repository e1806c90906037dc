"""Memcached tile cache on pipelined connections (`memcached_protocol`).

The `get`s of one event-loop iteration go out as one multi-get, and every command is
written at once on a connection shared by all callers: a busy server process makes one
write and one read per iteration for its hits, not one of each per request. `set_many`
writes every `set` of a metatile at once and reads the replies (one round trip instead
of 64), as `delete_many` does with the deletes of an invalidation (`generate_tiles
--update`). A reply that does not come within `timeout` of its command drops the
connection, so that a late reply is never read as another command's answer.

`MemcachedServer` is one server; the tile server puts each behind its own health
tracking (`services.cache_ring`), so that a dead server costs only its own keys.
`MemcachedCache` spreads keys over every server by consistent hashing, for the commands
that need every server to answer (`generate_tiles --update`). A tile's render time
travels in the item's 32-bit flags. Every failure is raised as `CacheUnavailable`,
`CacheTimeout` when a reply (or a new connection) took longer than `timeout`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from tileserver.adapters.memcached_protocol import Batcher, Connections, NoAnswer
from tileserver.adapters.sharded_cache import ShardedCache
from tileserver.config import MemcachedConfig
from tileserver.errors import CacheTimeout, CacheUnavailable
from tileserver.types import CacheEntry

DELETE_BATCH = 1000  # delete commands written at once on a connection before reading replies

MAX_RELATIVE_TTL = 30 * 24 * 3600  # memcached reads larger expiry times as Unix times


def expiry(ttl: int) -> int:
    """The protocol's exptime for a TTL in seconds: relative up to 30 days, beyond that
    the absolute Unix time (else memcached would expire the item at once)."""
    if ttl <= MAX_RELATIVE_TTL:
        return ttl
    return int(time.time()) + ttl


MAX_FLAGS = 2**32 - 1  # memcached's item flags are 32 bits


@asynccontextmanager
async def _guard(what: str) -> AsyncIterator[None]:
    """A command's failures as CacheUnavailable; CacheTimeout when it took too long."""
    try:
        yield
    except NoAnswer as exc:
        raise CacheTimeout(f"memcached {what}: {exc}") from exc
    except (OSError, EOFError, ValueError, IndexError) as exc:
        raise CacheUnavailable(f"memcached {what}: {exc or type(exc).__name__}") from exc


class MemcachedServer:
    """One Memcached server: a TileCache of its own, on up to `pool_size` pipelined
    connections."""

    name = "memcached"

    def __init__(self, host: str, port: int, pool_size: int = 8, timeout: float = 1.0) -> None:
        self._connections = Connections(host, port, pool_size, timeout, self.name)
        self._batcher = Batcher(self._connections)
        self.address = self._connections.address

    def __repr__(self) -> str:
        return f"memcached {self.address}"

    async def _lines(self, payload: bytes, count: int) -> list[bytes]:
        conn = await self._connections.get()
        lines: list[bytes] = await conn.send(payload, conn.lines(count))
        return lines

    async def ping(self) -> bool:
        """True when the server answers `version`; its connections are then opened, up to
        `pool_size`."""
        try:
            async with _guard("version"):
                (line,) = await self._lines(b"version\r\n", 1)
                if not line.startswith(b"VERSION "):
                    return False
                await self._connections.fill()
                return True
        except CacheUnavailable:
            return False

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        if not keys:
            return {}
        async with _guard("get"):
            return await self._batcher.get(keys)

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> None:
        if not items:
            return
        flags = stamp if 0 <= stamp <= MAX_FLAGS else 0
        exptime = expiry(ttl)
        payload = bytearray()
        for key, value in items.items():
            payload += f"set {key} {flags} {exptime} {len(value)}\r\n".encode()
            payload += value
            payload += b"\r\n"
        async with _guard("set"):
            replies = await self._lines(bytes(payload), len(items))
            failures = [
                f"{key}: {reply.decode(errors='replace')}"
                for key, reply in zip(items, replies, strict=True)
                if reply != b"STORED"
            ]
            if failures and len(failures) == len(items):
                raise ValueError(f"set refused: {failures[0]}")

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        payload = f"add {key} 0 {expiry(ttl)} {len(value)}\r\n".encode() + value + b"\r\n"
        async with _guard("add"):
            (reply,) = await self._lines(payload, 1)
            if reply == b"STORED":
                return True
            if reply == b"NOT_STORED":
                return False
            raise ValueError(f"add: unexpected reply {reply[:80]!r}")

    async def delete(self, key: str) -> None:
        async with _guard("delete"):
            (reply,) = await self._lines(f"delete {key}\r\n".encode(), 1)
            if reply not in (b"DELETED", b"NOT_FOUND"):
                raise ValueError(f"delete: unexpected reply {reply[:80]!r}")

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Pipelined: DELETE_BATCH commands per write, every batch's replies awaited."""
        if not keys:
            return 0
        async with _guard("delete"):
            conn = await self._connections.get()
            replies = []
            for start in range(0, len(keys), DELETE_BATCH):
                batch = keys[start : start + DELETE_BATCH]
                payload = b"".join(b"delete " + key.encode() + b"\r\n" for key in batch)
                replies.append(conn.send(payload, conn.lines(len(batch))))
            deleted = 0
            for lines in await asyncio.gather(*replies):
                for reply in lines:
                    if reply == b"DELETED":
                        deleted += 1
                    elif reply != b"NOT_FOUND":
                        raise ValueError(f"delete: unexpected reply {reply[:80]!r}")
        return deleted

    async def close(self) -> None:
        self._batcher.close()
        self._connections.close()
        # Let the transports' close callbacks run before the loop may stop.
        await asyncio.sleep(0)


def servers_of(config: MemcachedConfig) -> list[MemcachedServer]:
    return [MemcachedServer(host, port, config.pool_size, config.timeout)
            for host, port in config.servers]  # fmt: skip


class MemcachedCache(ShardedCache[MemcachedServer]):
    """Every memcached server of the configuration as one TileCache (`sharded_cache`)."""

    name = "memcached"

    def __init__(self, config: MemcachedConfig) -> None:
        super().__init__(servers_of(config))
