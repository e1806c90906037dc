"""The servers of a shared on-demand cache (Memcached's or Redis's) as one TileCache: keys
spread over them by consistent hashing, each command sent to the servers its keys live on.
A failure of any server fails the command (the server's ring in `services/cache_ring`
is what tolerates a dead server; this is what the commands use: `--update`,
`/admin/expire`, the contract suite)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from tileserver.hashring import HashRing
from tileserver.types import CacheEntry


class Server(Protocol):
    """One server of the cache, as its adapter drives it."""

    @property
    def address(self) -> str: ...

    async def ping(self) -> bool: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]: ...

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> None: ...

    async def add(self, key: str, value: bytes, ttl: int) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def delete_many(self, keys: Sequence[str]) -> int: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Server)


class ShardedCache(Generic[S]):
    """Every server, keys spread by consistent hashing. `delete_many` also deletes each key
    from the server it fails over to (where the tile server kept it while its own server
    was down)."""

    name: str  # "memcached", "redis": the adapter's

    def __init__(self, servers: Sequence[S]) -> None:
        self._ring = HashRing([(s.address, s) for s in servers])

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self._ring.nodes]

    @property
    def servers(self) -> list[S]:
        return self._ring.nodes

    def _by_server(self, keys: Iterable[str]) -> dict[S, list[str]]:
        groups: dict[S, list[str]] = defaultdict(list)
        for key in keys:
            groups[self._ring.node_for(key)].append(key)
        return groups

    async def ping(self) -> list[str]:
        """Addresses of the servers that answer."""
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
        own: dict[S, list[str]] = defaultdict(list)
        failover: dict[S, list[str]] = defaultdict(list)
        for key in dict.fromkeys(keys):
            servers = self._ring.nodes_for(key)
            own[next(servers)].append(key)
            failover[next(servers)].append(key)
        counts = await asyncio.gather(
            *(server.delete_many(group) for server, group in own.items()),
            *(server.delete_many(group) for server, group in failover.items()),
        )
        return sum(counts[: len(own)])

    async def close(self) -> None:
        for server in self._ring.nodes:
            await server.close()
