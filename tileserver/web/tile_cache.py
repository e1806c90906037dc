"""The tile cache a server process uses, composed from its configuration: each Memcached
or Redis server with its own health on a consistent-hash ring, the in-process LRU behind
them for the keys no server can take (or alone, with neither `memcached` nor
`redis_cache`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tileserver.adapters.memory_cache import MemoryCache
from tileserver.adapters.prometheus_metrics import PrometheusMetrics
from tileserver.adapters.tile_caches import CacheServer, cache_servers
from tileserver.config import Config
from tileserver.services.cache_ring import CacheRing
from tileserver.services.resilient_cache import ResilientCache

log = logging.getLogger("tileserver.server")


async def open_tile_cache(config: Config, metrics: PrometheusMetrics | None) -> CacheRing:
    """The cache ring of config. Servers that do not answer now start down: their keys go
    to the in-process cache until they answer (checked every `retry_interval`), without
    a restart."""
    size = config.server.memory_cache_mb
    memory = MemoryCache(size * 1024 * 1024)
    embedded = f"embedded in-process LRU cache ({size} MB)"
    shared = config.shared_cache
    if shared is None:
        log.warning("tile cache: %s: no memcached nor redis_cache section in the config",
                    embedded)  # fmt: skip
        return CacheRing([], ResilientCache(memory))
    servers: list[CacheServer] = cache_servers(config)
    kind = servers[0].name  # memcached | redis
    on_failure = None if metrics is None else lambda: metrics.error(kind, "unavailable")
    nodes: list[ResilientCache] = []
    for server in servers:
        report = None if metrics is None else _reporter(metrics, server.address)
        while_down = (
            "its keys go to the next server on the ring, or to the in-process cache when "
            "none answers"
        )
        nodes.append(
            ResilientCache(
                server,
                shared.retry_interval,
                on_failure,
                address=server.address,
                while_down=while_down,
                on_change=report,
            )
        )
    ring = CacheRing(nodes, ResilientCache(memory))
    addresses = ", ".join(s.address for s in servers)
    log.warning("tile cache: %s %s; %s for the keys of servers down", kind, addresses, embedded)
    answers = await asyncio.gather(*(server.ping() for server in servers))
    for server, node, up in zip(servers, nodes, answers, strict=True):
        if not up:
            node.mark_down("not reachable at start-up")
        if metrics is not None:
            metrics.cache_server(server.address, up)
    return ring


def _reporter(metrics: PrometheusMetrics, address: str) -> Callable[[bool], None]:
    return lambda up: metrics.cache_server(address, up)
