"""Tile serving: cache, then one render per metatile, cut tiles written back in one round.

A metatile is rendered at most once at a time: within a process, requests for any of
its tiles share one render task; across processes and hosts, the render is guarded by
a lock taken with the cache's atomic `add` (with a TTL, so a crashed holder does not
block it forever), and the cache is checked again once the lock is held. Waiters
poll the cache with `asyncio.sleep`, never blocking the event loop.

An optional hot tier (`HotTiles`, in-process) in front of the cache and the stores answers
the tiles served in the last `hot_max_age` seconds without a round trip; a tile stays
there no longer than its layer's expiry either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tileserver.blank import transparent_tile
from tileserver.config import Layer
from tileserver.grid import Metatile, metatile_for
from tileserver.keys import layer_key_part, metatile_lock_key, tile_key
from tileserver.protocols import HotTiles, Renderer, TileStore
from tileserver.services.resilient_cache import ResilientCache
from tileserver.store_layout import tile_path
from tileserver.tile_request import TileRequest
from tileserver.types import TileCoord

log = logging.getLogger("tileserver.render")

_POLL_FIRST = 0.02  # seconds; a metatile render takes 50 ms and more
# A waiter sees the tiles at most this long after they land: a slow render (a WMS under
# load: 300-600 ms) seen up to 220 ms late with 0.25 s; one Memcached get per waiter and
# 0.1 s costs nothing next to that.
_POLL_MAX = 0.1


@dataclass(frozen=True, slots=True)
class Tile:
    data: bytes | None  # None: no content (a missing pre-generated tile, missing_tile: no_content)
    source: str  # memcached | memory | render | coalesced | store | missing | hot


@dataclass(frozen=True, slots=True)
class _Produced:
    tiles: Mapping[TileCoord, bytes]
    source: str


class TileService:
    def __init__(
        self,
        cache: ResilientCache,
        renderer: Renderer,
        key_prefix: str,
        lock_timeout: float = 60.0,
        stores: Mapping[str, TileStore] | None = None,
        on_render: Callable[[str, float], None] | None = None,
        hot: HotTiles | None = None,
        hot_max_age: float = 10.0,
    ) -> None:
        self.cache = cache
        self.hot = hot
        self.hot_max_age = hot_max_age
        self._on_render = on_render  # (layer name, seconds) of each metatile rendered
        self.renderer = renderer
        self.stores = dict(stores or {})
        self.key_prefix = key_prefix
        self.lock_timeout = lock_timeout
        self._inflight: dict[tuple[str, int, int, int], asyncio.Task[_Produced]] = {}

    @property
    def renders_in_progress(self) -> int:
        return len(self._inflight)

    async def cancel_renders(self) -> None:
        """Cancels the renders under way, at shutdown once no request waits for them:
        their Memcached locks are released, so other hosts render those metatiles."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def get_tile(self, request: TileRequest) -> Tile:
        layer = request.layer
        store = self.stores.get(layer.cache or "")
        if store is not None and not layer.is_on_demand(request.coord.z):
            tile = await self._from_store(store, request)
            if tile is not None:
                return tile
        return await self._on_demand(request)

    async def _from_store(self, store: TileStore, request: TileRequest) -> Tile | None:
        """A pre-generated tile; None where the layer renders missing ones on demand.

        StoreUnavailable goes up: the HTTP face answers it with a 503.
        """
        layer, coord, grid = request.layer, request.coord, request.layer.grid
        matrix = grid.matrix_id(coord.z)
        path = tile_path(
            "", layer.name, request.style, request.dimensions, grid.name, matrix,
            coord.row, coord.col, layer.extension,
        )  # fmt: skip
        hot_key = f"#store/{layer.cache}/{path}"
        if self.hot is not None:
            data = self.hot.get(hot_key)
            if data is not None:
                return Tile(data, "hot")
        data = await store.get(path)
        if data is not None:
            if self.hot is not None:
                self.hot.put(hot_key, data, self.hot_max_age)
            return Tile(data, "store")
        if layer.missing_tile == "no_content":
            return Tile(None, "missing")
        if layer.missing_tile == "transparent":
            return Tile(transparent_tile(layer.mime_type, grid.tile_size), "missing")
        return None

    async def _on_demand(self, request: TileRequest) -> Tile:
        layer, coord = request.layer, request.coord
        part = layer_key_part(layer.name, request.style, request.dimensions, layer.grid.name)
        key = tile_key(self.key_prefix, part, coord)
        if self.hot is not None:
            data = self.hot.get(key)
            if data is not None:
                return Tile(data, "hot")
        found = await self.cache.get_many([key])
        if key in found:
            self._keep_hot(layer, {key: found[key]})
            return Tile(found[key], self.cache.name)

        metatile = metatile_for(
            grid=layer.grid,
            coord=coord,
            meta_size=layer.effective_meta_size,
            meta_buffer=layer.meta_buffer,
        )
        dimensions = dict(zip((d.name for d in layer.dimensions), request.dimensions, strict=True))
        task_key = (part, metatile.z, metatile.row, metatile.col)
        task = self._inflight.get(task_key)
        first = task is None
        if task is None:
            task = asyncio.create_task(self._produce(request, part, metatile, dimensions))
            self._inflight[task_key] = task
            task.add_done_callback(lambda _: self._inflight.pop(task_key, None))
        # shield: a client that goes away must not cancel a render others wait for.
        produced = await asyncio.shield(task)
        data = produced.tiles.get(coord)
        if data is None:
            # The shared task found its own tile in the cache, not ours: look ours up
            # (and render it, should it be gone) under the same lock discipline.
            produced = await self._produce(request, part, metatile, dimensions)
            return Tile(produced.tiles[coord], produced.source)
        return Tile(data, produced.source if first else "coalesced")

    async def _produce(
        self,
        request: TileRequest,
        part: str,
        metatile: Metatile,
        dimensions: Mapping[str, str],
    ) -> _Produced:
        layer, coord = request.layer, request.coord
        key = tile_key(self.key_prefix, part, coord)
        lock = metatile_lock_key(self.key_prefix, part, metatile.z, metatile.row, metatile.col)
        lock_ttl = max(1, round(self.lock_timeout))
        deadline = time.monotonic() + self.lock_timeout
        delay = _POLL_FIRST
        while True:
            if await self.cache.add(lock, b"1", lock_ttl):
                try:
                    # Rendered elsewhere between our miss and the lock?
                    found = await self.cache.get_many([key])
                    if key in found:
                        return _Produced({coord: found[key]}, self.cache.name)
                    return await self._render(layer, part, metatile, dimensions)
                finally:
                    await self.cache.delete(lock)
            # Another process or host renders this metatile: wait for its tiles.
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX)
            found = await self.cache.get_many([key, lock])
            if key in found:
                return _Produced({coord: found[key]}, self.cache.name)
            if lock in found and time.monotonic() > deadline:
                log.warning(
                    "lock %s held for more than %g s: rendering anyway", lock, self.lock_timeout
                )
                return await self._render(layer, part, metatile, dimensions)
            # Lock gone without the tile (render failed, cache flushed): try to take it.

    async def _render(
        self, layer: Layer, part: str, metatile: Metatile, dimensions: Mapping[str, str]
    ) -> _Produced:
        start = time.perf_counter()
        tiles = await self.renderer.render(layer, metatile, dimensions)
        elapsed = time.perf_counter() - start
        if self._on_render is not None:
            self._on_render(layer.name, elapsed)
        log.info(
            "rendered metatile %s matrix=%s row=%d col=%d tiles=%d in %.0f ms",
            part,
            layer.grid.matrix_id(metatile.z),
            metatile.row,
            metatile.col,
            len(tiles),
            elapsed * 1000,
        )
        items = {tile_key(self.key_prefix, part, coord): data for coord, data in tiles.items()}
        await self.cache.set_many(items, layer.ttl_seconds)
        self._keep_hot(layer, items)
        return _Produced(tiles, "render")

    def _keep_hot(self, layer: Layer, items: Mapping[str, bytes]) -> None:
        if self.hot is None:
            return
        ttl = self.hot_max_age
        if layer.ttl_seconds > 0:
            ttl = min(ttl, layer.ttl_seconds)
        for key, data in items.items():
            self.hot.put(key, data, ttl)
