"""Builds the shared on-demand tile cache a configuration describes (`memcached` or
`redis_cache`, see `Config.tile_cache`): its servers one by one (the tile server's ring),
or all of them as one cache (`generate_tiles --update`); and says how an operator
flushes it."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from tileserver.config import Config, MemcachedConfig
from tileserver.protocols import SharedCache, TileCache


class CacheServer(TileCache, Protocol):
    """One server of the shared cache."""

    address: str

    async def ping(self) -> bool:
        """True when the server answers."""
        ...


def cache_servers(config: Config) -> list[CacheServer]:
    """Each Memcached or Redis server of the configuration; [] for the in-process cache."""
    shared = config.shared_cache
    if isinstance(shared, MemcachedConfig):
        from tileserver.adapters.memcached import servers_of

        return list(servers_of(shared))
    if shared is not None:
        from tileserver.adapters.redis_cache import nodes_of

        return list(nodes_of(shared))
    return []


def shared_cache_for(config: Config) -> SharedCache | None:
    """The Memcached or Redis cache of the configuration; None for the in-process cache."""
    shared = config.shared_cache
    if isinstance(shared, MemcachedConfig):
        from tileserver.adapters.memcached import MemcachedCache

        return MemcachedCache(shared)
    if shared is not None:
        from tileserver.adapters.redis_cache import RedisCache

        return RedisCache(shared)
    return None


def flush_hint(config: Config) -> str:
    """The shell command that empties the shared cache."""
    shared = config.shared_cache
    if isinstance(shared, MemcachedConfig):
        return "; ".join(f"echo flush_all | nc -q 2 {h} {p}" for h, p in shared.servers)
    if shared is None:
        return "restart the servers (their in-process caches)"
    ask = " --askpass" if shared.password else ""
    if shared.url:
        url = urlsplit(shared.url)
        if url.scheme == "unix":
            return f"redis-cli -s {url.path} -n {shared.db} FLUSHDB"
        db = url.path.strip("/") or "0"
        ask = " --askpass" if url.password else ""  # never the password itself
        return f"redis-cli -h {url.hostname} -p {url.port or 6379} -n {db}{ask} FLUSHDB"
    if shared.sentinels:  # the master's host and port, as the first sentinel names them
        host, port = shared.sentinels[0]
        return (
            f"set -- $(redis-cli -h {host} -p {port} SENTINEL get-master-addr-by-name "
            f'{shared.service_name}); redis-cli -h "$1" -p "$2" -n {shared.db}{ask} FLUSHDB'
        )
    return "; ".join(
        f"redis-cli -h {h} -p {p} -n {shared.db}{ask} FLUSHDB" for h, p in shared.servers
    )
