"""The composition root: the one module outside the adapters that names concrete
backends. It turns a configuration into tile caches, tile stores, renderers, job queues
and notifiers for every face (the server, generate_tiles, generate_controller); faces and
services otherwise see only the Protocols of `tileserver.protocols`.

An adapter is imported when first built, so that a command loads only the clients it
uses (no boto for a folder store, no psycopg without `geoms`, no Mapnik for --status).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from tileserver.config import CacheConfig, Config, Layer, LayerGeom
from tileserver.errors import ConfigError
from tileserver.protocols import (
    HotTiles,
    JobQueue,
    Metrics,
    Notifier,
    ReleaseNotices,
    RenderPool,
    SharedCache,
    TileStore,
)
from tileserver.services.cache_ring import CacheRing
from tileserver.services.pmtiles_export import ArchiveWriter
from tileserver.services.resilient_cache import ResilientCache
from tileserver.store_layout import Tileset, tileset_of

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

log = logging.getLogger("tileserver.server")


# --- tile caches -----------------------------------------------------------------------------


def shared_cache(config: Config) -> SharedCache | None:
    """The Memcached or Redis servers of the `memcached` or `redis_cache` section, as one
    cache (`generate_tiles --update`); None for the in-process cache."""
    from tileserver.adapters.tile_caches import shared_cache_for

    return shared_cache_for(config)


def flush_hint(config: Config) -> str:
    """The shell command that empties the shared cache."""
    from tileserver.adapters.tile_caches import flush_hint as hint

    return hint(config)


async def open_tile_cache(config: Config, metrics: Metrics | None) -> CacheRing:
    """The tile cache of a server process: each Memcached or Redis server with its own
    health on a consistent-hash ring, the in-process LRU behind them for the keys no server
    can take (or alone, with neither `memcached` nor `redis_cache`). Servers that do not
    answer now start down: their keys go to the in-process cache until they answer
    (checked every `retry_interval`), without a restart."""
    from tileserver.adapters.memory_cache import MemoryCache
    from tileserver.adapters.tile_caches import CacheServer, cache_servers

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


def _reporter(metrics: Metrics, address: str) -> Callable[[bool], None]:
    return lambda up: metrics.cache_server(address, up)


def hot_tiles(config: Config, cache: CacheRing) -> HotTiles | None:
    """The in-process hot tier, when configured and the tile cache is not in-process too."""
    if config.server.hot_cache_mb <= 0 or not cache.servers:
        return None
    from tileserver.adapters.memory_cache import MemoryCache

    log.warning(
        "hot tiles: in-process tier of %d MB, %g s", config.server.hot_cache_mb,
        config.server.hot_cache_max_age,
    )  # fmt: skip
    return MemoryCache(config.server.hot_cache_mb * 1024 * 1024)


def release_notices(cache: CacheRing, stack: AsyncExitStack) -> ReleaseNotices | None:
    """Render locks' releases told to the waiting server processes of this host, when the
    tile cache is shared (in-process, nobody else waits); closed with `stack`."""
    if not cache.servers:
        return None
    from tileserver.adapters.release_notices import UnixReleaseNotices

    notices = UnixReleaseNotices()
    if not notices.open():
        return None
    stack.callback(notices.close)
    return notices


# --- tile stores -----------------------------------------------------------------------------


def bound_tileset(cache: CacheConfig, config: Config) -> Tileset | None:
    """The tileset of a single-tileset file (an MBTiles `file`, a PMTiles archive): that
    of the one layer using the cache (config refuses more), with its default dimension
    values; None when no layer uses it."""
    users: list[Layer] = [layer for layer in config.layers.values() if layer.cache == cache.name]
    if not users:
        return None
    layer = users[0]
    values = tuple(d.default for d in layer.dimensions)
    return tileset_of(layer.name, layer.wmts_style, values, layer.extension, layer.grid)


def tile_store(cache: CacheConfig, config: Config) -> TileStore:
    """The tile store a `caches` entry of config describes (not open yet)."""
    if cache.type == "filesystem":
        from tileserver.adapters.filesystem_store import FilesystemStore

        return FilesystemStore(cache.folder)
    if cache.type in ("mbtiles", "geopackage"):
        from tileserver.adapters.geopackage_store import GeoPackageStore
        from tileserver.adapters.mbtiles_store import MBTilesStore

        location, single = cache.file or cache.folder, bool(cache.file)
        if cache.type == "geopackage":
            return GeoPackageStore(
                location, grids=config.grids, layers=config.layers, single_file=single
            )
        bound = bound_tileset(cache, config)
        return MBTilesStore(location, grids=config.grids, layers=config.layers,
                            single_file=single, bound=bound.key if bound else None)  # fmt: skip
    if cache.type == "pmtiles":
        from tileserver.adapters.pmtiles_store import PMTilesStore

        return PMTilesStore(cache.file or cache.url, bound_tileset(cache, config))
    from tileserver.adapters.s3_store import S3Store

    return S3Store(
        cache.bucket,
        cache.folder,
        endpoint_url=cache.endpoint_url,
        region=cache.region,
        cache_control=cache.cache_control,
    )


async def open_serving_stores(config: Config, stack: AsyncExitStack) -> dict[str, TileStore]:
    """The tile stores that serve the pre-generated levels of some layer, each closed
    with the stack."""
    names = {
        layer.cache
        for layer in config.layers.values()
        if layer.cache is not None and layer.min_resolution_seed is not None
    }
    stores: dict[str, TileStore] = {}
    for name in sorted(names):
        store = tile_store(config.caches[name], config)
        await store.open()
        stack.push_async_callback(store.close)
        log.warning("tile store %r: %r (pre-generated levels)", name, store)
        stores[name] = store
    return stores


def pmtiles_writer(target: Path) -> tuple[ArchiveWriter, Callable[[int, int, int], int]]:
    """A PMTiles archive written at target, and the order its tiles are added in."""
    from tileserver.adapters.pmtiles_store import PMTilesWriter, tile_order

    return PMTilesWriter(target), tile_order


def temporary_files(cache: CacheConfig, prefix: str) -> Iterator[Path]:
    """The files that writes cut short (a killed run) left under prefix in a folder store;
    none in the other stores (their writes are whole or absent)."""
    if cache.type != "filesystem":
        return
    from tileserver.adapters.filesystem_store import is_temporary

    for folder, _, names in os.walk(Path(cache.folder) / prefix):
        for name in names:
            if is_temporary(name):
                yield Path(folder, name)


# --- renderers -------------------------------------------------------------------------------


def render_pool(layers: Sequence[Layer], processes: int, config: Config) -> RenderPool:
    """The renderer of the layers: Mapnik layers render in a pool of `processes`
    processes, WMS layers are fetched and cut in that same pool (not started yet)."""
    from tileserver.adapters.renderers import LayerRenderer

    return LayerRenderer(layers, processes, config.server.render_timeout, config.upstream)


def generation_renderer(layers: Sequence[Layer], processes: int, config: Config) -> RenderPool:
    """The renderer of a generation (generate_tiles, its workers): WMS layers whose tiles
    need no Mapnik are cut in `processes` threads of this process, with no render process
    to start; any other layer set gets `render_pool`."""
    from tileserver.adapters.threaded_cut import ThreadedWmsRenderer, cuts_in_threads

    if cuts_in_threads(layers):
        return ThreadedWmsRenderer(processes, config.upstream)
    return render_pool(layers, processes, config)


def check_mapfiles(config: Config, warn: Callable[[str], None]) -> list[str]:
    """Initialisation stage of the validation: every Mapnik file loads; the errors.
    A layer whose database is unavailable cannot be checked: `warn` hears of it."""
    from tileserver.adapters.mapnik_renderer import map_spec
    from tileserver.adapters.mapnik_worker import DatabaseUnavailable, load_map

    errors = []
    for layer in config.layers.values():
        if layer.type == "mapnik" and layer.mapfile is not None:
            try:
                load_map(map_spec(layer))
            except ConfigError as exc:
                errors.extend(exc.messages)
            except DatabaseUnavailable as exc:
                warn(
                    f"layers.{layer.name}: its database is unavailable, the style could not be "
                    f"checked: {exc}"
                )
            except Exception as exc:
                errors.append(f"layers.{layer.name}.mapfile: Mapnik cannot load it: {exc}")
    return errors


def empty_tile_warnings(config: Config) -> list[str]:
    """The layers whose empty_tile_detection hash never matches what they encode (this
    encodes tiles, with Mapnik: for the commands that render)."""
    from tileserver.adapters.empty_tile_check import never_matches

    return [w for layer in config.layers.values() if (w := never_matches(layer)) is not None]


def load_geometry(geom: LayerGeom, where: str) -> BaseGeometry:
    """The geometry of one `geoms` entry: its file read, or its query run."""
    from tileserver.adapters.geoms import load_geometry as load

    return load(geom, where)


# --- distributed generation ------------------------------------------------------------------


def job_queue(config: Config) -> JobQueue | None:
    """The queue of `generation.queue` (else of the one `sqs` or `redis` section); None
    without either."""
    if config.queue == "sqs" and config.sqs is not None:
        from tileserver.adapters.sqs_queue import SqsQueue

        return SqsQueue(config.sqs)
    if config.queue == "redis" and config.redis is not None:
        from tileserver.adapters.redis_queue import RedisQueue

        return RedisQueue(config.redis)
    return None


def notifiers(config: Config, queue: JobQueue) -> list[Notifier]:
    """Who hears of the end of a generation: the `sns` topic, and the Redis queue's channel."""
    found: list[Notifier] = []
    if config.sns is not None:
        from tileserver.adapters.sns_notifier import SnsNotifier

        found.append(SnsNotifier(config.sns))
    from tileserver.adapters.redis_queue import RedisQueue

    if isinstance(queue, RedisQueue):
        found.append(queue)
    return found


# --- metrics ---------------------------------------------------------------------------------


def prometheus_metrics() -> Metrics:
    """The server's counters and histograms, exposed at /metrics."""
    from tileserver.adapters.prometheus_metrics import PrometheusMetrics

    return PrometheusMetrics()
