"""Memcached tile cache over aiomcache's connection pool.

The commands are written here on aiomcache's pooled connections rather than through
`aiomcache.Client`, for two reasons: `set_many` pipelines every `set` of a metatile in
one write and one read (one round trip instead of 64), as `delete_many` does with the
deletes of an invalidation (`generate_tiles --update`), and a command interrupted by a
timeout or a cancellation must never return its connection to the pool with an
unread answer on it (the next command would read a stale value). Any failure marks
the connection broken, so the pool closes it.

`MemcachedServer` is one server; the tile server puts each behind its own health
tracking (`services.cache_ring`), so that a dead server costs only its own keys.
`MemcachedCache` spreads keys over every server by consistent hashing, for the commands
that need every server to answer (`generate_tiles --update`). A tile's render time
travels in the item's 32-bit flags. Every failure is raised as `CacheUnavailable`,
`CacheTimeout` when the wait for a free pooled connection or the command itself took
longer than `timeout` (two budgets, not one).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager

from aiomcache.pool import Connection, MemcachePool

from tileserver.config import MemcachedConfig
from tileserver.errors import CacheTimeout, CacheUnavailable
from tileserver.hashring import HashRing
from tileserver.types import CacheEntry

DELETE_BATCH = 1000  # delete commands written at once on a connection before reading replies


class _Broken(Exception):
    """Marks a pooled connection as unusable."""


class _NoAnswer(Exception):
    """A command, or the wait for a free connection, took longer than its budget."""


class _Pool:
    """A server's connection pool, each command's wait and round trips bounded."""

    def __init__(self, host: str, port: int, pool_size: int, timeout: float) -> None:
        self.address = f"{host}:{port}"
        self.timeout = timeout
        self.pool_size = pool_size
        # aiomcache opens connections only up to minsize: ask for all of them, or every
        # request would queue on a single connection.
        self.pool = MemcachePool(host, port, minsize=pool_size, maxsize=pool_size)

    @asynccontextmanager
    async def connection(self, round_trips: int = 1) -> AsyncIterator[Connection]:
        """A pooled connection, waited for at most `timeout` seconds, then used for at most
        `timeout` per round trip: under load, the wait for a free connection does not eat
        into the command's own time (and neither is taken for an outage on its own)."""
        try:
            async with asyncio.timeout(self.timeout):
                conn = await self.pool.acquire()
        except TimeoutError as exc:
            raise _NoAnswer(
                f"no free connection to {self.address} in {self.timeout:g} s "
                f"({self.pool_size} in use)"
            ) from exc
        budget = self.timeout * round_trips
        try:
            try:
                async with asyncio.timeout(budget):
                    yield conn
            except TimeoutError as exc:
                raise _NoAnswer(f"no answer from {self.address} in {budget:g} s") from exc
        except BaseException:
            # Unread replies may be left on the wire: never reuse this connection.
            conn.reader.set_exception(_Broken(self.address))
            raise
        finally:
            self.pool.release(conn)


async def _read_line(conn: Connection) -> bytes:
    line = await conn.reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionResetError("memcached closed the connection")
    return line


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
    """A command's failures as CacheUnavailable; CacheTimeout when it took too long
    (each connection bounds its own wait and command, see `_Pool.connection`)."""
    try:
        yield
    except _NoAnswer as exc:
        raise CacheTimeout(f"memcached {what}: {exc}") from exc
    except (OSError, EOFError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        raise CacheUnavailable(f"memcached {what}: {exc or type(exc).__name__}") from exc


class MemcachedServer:
    """One Memcached server: a TileCache of its own."""

    name = "memcached"

    def __init__(self, host: str, port: int, pool_size: int = 8, timeout: float = 1.0) -> None:
        self._pool = _Pool(host, port, pool_size, timeout)
        self.address = self._pool.address

    def __repr__(self) -> str:
        return f"memcached {self.address}"

    async def ping(self) -> bool:
        """True when the server answers `version`."""
        try:
            async with _guard("version"), self._pool.connection() as conn:
                conn.writer.write(b"version\r\n")
                return (await _read_line(conn)).startswith(b"VERSION ")
        except CacheUnavailable:
            return False

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        if not keys:
            return {}
        wanted = set(keys)
        found: dict[str, CacheEntry] = {}
        async with _guard("get"), self._pool.connection() as conn:
            conn.writer.write(b"get " + " ".join(dict.fromkeys(keys)).encode() + b"\r\n")
            while True:
                line = await _read_line(conn)
                if line == b"END\r\n":
                    return found
                terms = line.split()
                if len(terms) < 4 or terms[0] != b"VALUE":
                    raise ValueError(f"unexpected reply {line[:80]!r}")
                key, length = terms[1].decode(), int(terms[3])
                value = await conn.reader.readexactly(length + 2)
                if key not in wanted:
                    raise ValueError(f"reply for a key not asked for: {key[:80]!r}")
                found[key] = CacheEntry(value[:-2], int(terms[2]), self.name)

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
        async with _guard("set"), self._pool.connection() as conn:
            conn.writer.write(bytes(payload))
            await conn.writer.drain()
            failures = []
            for key in items:
                reply = await _read_line(conn)
                if reply != b"STORED\r\n":
                    failures.append(f"{key}: {reply.strip().decode(errors='replace')}")
            if failures and len(failures) == len(items):
                raise ValueError(f"set refused: {failures[0]}")

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        async with _guard("add"), self._pool.connection() as conn:
            conn.writer.write(
                f"add {key} 0 {expiry(ttl)} {len(value)}\r\n".encode() + value + b"\r\n"
            )
            reply = await _read_line(conn)
            if reply == b"STORED\r\n":
                return True
            if reply == b"NOT_STORED\r\n":
                return False
            raise ValueError(f"add: unexpected reply {reply[:80]!r}")

    async def delete(self, key: str) -> None:
        async with _guard("delete"), self._pool.connection() as conn:
            conn.writer.write(f"delete {key}\r\n".encode())
            reply = await _read_line(conn)
            if reply not in (b"DELETED\r\n", b"NOT_FOUND\r\n"):
                raise ValueError(f"delete: unexpected reply {reply[:80]!r}")

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Pipelined: DELETE_BATCH commands in one write, then their replies."""
        if not keys:
            return 0
        deleted = 0
        round_trips = -(-len(keys) // DELETE_BATCH)
        async with _guard("delete"), self._pool.connection(round_trips) as conn:
            for start in range(0, len(keys), DELETE_BATCH):
                batch = keys[start : start + DELETE_BATCH]
                conn.writer.write(b"".join(b"delete " + key.encode() + b"\r\n" for key in batch))
                await conn.writer.drain()
                for _ in batch:
                    reply = await _read_line(conn)
                    if reply == b"DELETED\r\n":
                        deleted += 1
                    elif reply != b"NOT_FOUND\r\n":
                        raise ValueError(f"delete: unexpected reply {reply[:80]!r}")
        return deleted

    async def close(self) -> None:
        await self._pool.pool.clear()
        # The pool closes transports without waiting; let their close callbacks run
        # before the loop may stop.
        await asyncio.sleep(0)


def servers_of(config: MemcachedConfig) -> list[MemcachedServer]:
    return [MemcachedServer(host, port, config.pool_size, config.timeout)
            for host, port in config.servers]  # fmt: skip


class MemcachedCache:
    """Every server of the configuration, keys spread by consistent hashing; a failure of
    any server fails the command. `delete_many` also deletes each key from the server it
    fails over to (where the tile server kept it while its own server was down)."""

    name = "memcached"

    def __init__(self, config: MemcachedConfig) -> None:
        self._ring = HashRing([(s.address, s) for s in servers_of(config)])

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self._ring.nodes]

    @property
    def servers(self) -> list[MemcachedServer]:
        return self._ring.nodes

    def _by_server(self, keys: Iterable[str]) -> dict[MemcachedServer, list[str]]:
        groups: dict[MemcachedServer, list[str]] = defaultdict(list)
        for key in keys:
            groups[self._ring.node_for(key)].append(key)
        return groups

    async def ping(self) -> list[str]:
        """Addresses of the servers that answer `version`."""
        return [s.address for s in self._ring.nodes if await s.ping()]

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        parts = await asyncio.gather(
            *(server.get_many(group) for server, group in self._by_server(keys).items())
        )
        return {key: entry for part in parts for key, entry in part.items()}

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> None:
        await asyncio.gather(
            *(
                server.set_many({key: items[key] for key in group}, ttl, stamp)
                for server, group in self._by_server(items).items()
            )
        )

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        return await self._ring.node_for(key).add(key, value, ttl)

    async def delete(self, key: str) -> None:
        await self._ring.node_for(key).delete(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Pipelined per server; how many keys were on their own server."""
        if len(self._ring.nodes) == 1:
            return await self._ring.nodes[0].delete_many(keys)
        own: dict[MemcachedServer, list[str]] = defaultdict(list)
        failover: dict[MemcachedServer, list[str]] = defaultdict(list)
        for key in keys:
            nodes = self._ring.nodes_for(key)
            own[next(nodes)].append(key)
            failover[next(nodes)].append(key)
        counts = await asyncio.gather(
            *(server.delete_many(group) for server, group in own.items()),
            *(server.delete_many(group) for server, group in failover.items()),
        )
        return sum(counts[: len(own)])

    async def close(self) -> None:
        for server in self._ring.nodes:
            await server.close()
