"""The tile cache a server uses: its Memcached servers on a consistent-hash ring, each
with its own health, and the in-process cache for keys no server can take.

Each server is a `ResilientCache` of its own: a dead one costs only its own keys, which
go to the next live server on the ring (`HashRing.nodes_for`) and come back once it
answers again; the other servers keep every key they had. A tile found on a server that
comes back is at most as old as its TTL allows (Memcached expires it). When every server
of a key is down (Memcached unreachable at start-up, or later), or none is configured,
the key goes to the in-process LRU: tiles are still cached, per process, and the
servers are used again as soon as they answer, without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from tileserver.hashring import HashRing
from tileserver.services.resilient_cache import ResilientCache
from tileserver.types import CacheEntry

PROBE_KEY = "#probe"  # read to see whether a server that was down answers again


class CacheRing:
    """Routes each key to the first server of its ring order that is not skipped for an
    outage, else to `fallback`; the same interface as a `ResilientCache`."""

    def __init__(
        self, servers: Sequence[ResilientCache], fallback: ResilientCache | None = None
    ) -> None:
        if not servers and fallback is None:
            raise ValueError("a cache ring needs a server or a fallback")
        self.servers = list(servers)
        self.fallback = fallback
        self._ring = (
            HashRing([(s.address or f"server{i}", s) for i, s in enumerate(servers)])
            if servers
            else None
        )
        self.name = servers[0].name if servers else fallback.name if fallback else ""

    @property
    def available(self) -> bool:
        """True when every server answers (the fallback is not in use)."""
        return all(server.available for server in self.servers)

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.servers) + (self.fallback.failures
                                                        if self.fallback else 0)  # fmt: skip

    def route(self, key: str) -> ResilientCache:
        """Where key is read and written now."""
        if self._ring is None:
            assert self.fallback is not None
            return self.fallback
        first = None
        for server in self._ring.nodes_for(key):
            if not server.skipping:
                return server
            first = first or server
        assert first is not None
        return self.fallback or first

    def _groups(self, keys: Iterable[str]) -> dict[ResilientCache, list[str]]:
        groups: dict[ResilientCache, list[str]] = {}
        for key in keys:
            groups.setdefault(self.route(key), []).append(key)
        return groups

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """The entries found; the keys of a server that fails meanwhile are asked once of
        where they go now (the next server, or the fallback)."""
        found: dict[str, CacheEntry] = {}
        pending: Sequence[str] = keys
        for attempt in (1, 2):
            groups = self._groups(pending)
            parts = await asyncio.gather(*(cache.get_many(g) for cache, g in groups.items()))
            retry: list[str] = []
            for (cache, group), part in zip(groups.items(), parts, strict=True):
                found.update(part)
                if attempt == 1 and cache.skipping:  # it failed: its keys go elsewhere now
                    retry.extend(key for key in group if key not in part)
            if not retry:
                break
            pending = retry
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> bool:
        """True when every item was stored somewhere (a server, or the fallback)."""
        pending = list(items)
        for attempt in (1, 2):
            groups = self._groups(pending)
            stored = await asyncio.gather(
                *(cache.set_many({k: items[k] for k in g}, ttl, stamp)
                  for cache, g in groups.items())
            )  # fmt: skip
            pending = [
                key
                for (cache, group), ok in zip(groups.items(), stored, strict=True)
                if not ok and attempt == 1 and cache.skipping
                for key in group
            ]
            if not pending:
                return all(stored)
        return False

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Takes a lock where key goes now; granted when no cache can be asked."""
        cache = self.route(key)
        added = await cache.add(key, value, ttl)
        if cache.skipping:  # it failed: the lock goes where its key goes now
            again = self.route(key)
            if again is not cache:
                return await again.add(key, value, ttl)
        return added

    async def delete(self, key: str) -> None:
        await self.route(key).delete(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Deletes keys everywhere they may be: their own server, the one they fail over
        to, and the fallback; how many were on their own server. Raises CacheUnavailable
        when a server does not answer (nothing is skipped: an invalidation must be
        complete, or say it is not)."""
        deleted = 0
        if self._ring is not None:
            own: dict[ResilientCache, list[str]] = {}
            failover: dict[ResilientCache, list[str]] = {}
            for key in keys:
                order = self._ring.nodes_for(key)
                own.setdefault(next(order), []).append(key)
                second = next(order, None)
                if second is not None:
                    failover.setdefault(second, []).append(key)
            counts = await asyncio.gather(
                *(cache.inner.delete_many(g) for cache, g in own.items()),
                *(cache.inner.delete_many(g) for cache, g in failover.items()),
            )
            deleted = sum(counts[: len(own)])
        if self.fallback is not None:
            found = await self.fallback.inner.delete_many(keys)
            if self._ring is None:
                deleted = found
        return deleted

    async def probe(self) -> None:
        """Asks the servers that are down and due for a retry whether they answer."""
        await asyncio.gather(
            *(s.get_many([PROBE_KEY]) for s in self.servers if not s.available and not s.skipping)
        )

    def states(self) -> dict[str, str]:
        """Each server's state, by address: "up", or "down for N s: why"."""
        return {
            server.address: "up" if server.available
            else f"down for {server.down_for():.0f} s: {server.last_error}"
            for server in self.servers
        }  # fmt: skip

    def degraded(self) -> dict[str, str]:
        """What /ready lists as degraded: each server down, and what serves its keys."""
        down = [s for s in self.servers if not s.available]
        if not down:
            return {}
        live = len(self.servers) - len(down)
        if live:
            where = f"the next live server on the ring ({live} of {len(self.servers)} up)"
        elif self.fallback is not None:
            where = f"the in-process {self.fallback.name} cache (no server answers)"
        else:
            where = "nowhere: tiles are rendered without being cached"
        return {
            f"tile cache {s.name} {s.address}": f"unavailable for {s.down_for():.0f} s "
            f"({s.last_error}): its keys go to {where}"
            for s in down
        }

    async def close(self) -> None:
        for cache in [*self.servers, *([self.fallback] if self.fallback else [])]:
            await cache.close()
