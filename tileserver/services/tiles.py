"""Tile serving: cache, then one render per metatile, cut tiles written back in one round.

Answer first: the request that starts a render is answered as soon as its own tile is
encoded (`Renderer.render`'s `on_first`); the render goes on, its other tiles are encoded
and written to the cache in one round, under the same lock, and the requests waiting for
them get them from it.

A metatile is rendered at most once at a time: within a process, requests for any of
its tiles share one render task; across processes and hosts, the render is guarded by
a lock that is a lease (`render_lock`): short, renewed while the render runs, so that a
lock whose holder died, or that a paused Memcached wrote late, holds nobody up for long.
The cache is checked again once the lock is held. Waiters of another process or host
look at the cache at once, then poll it, or are told of the lock's release by a holder
on the same host (`lock_wait`), never blocking the event loop.

Cached tiles carry their render time. A layer may opt in to RFC 5861's stale windows
(`freshness`): a tile past its expiry is answered at once while one background render
refreshes its metatile (`stale_while_revalidate`), or instead of an error when its
render fails (`stale_if_error`).

An optional hot tier (`HotTiles`, in-process; `hot_tier`) in front of the cache and the
stores answers the tiles served in the last `hot_max_age` seconds without a round trip; a
tile stays there no longer than it is fresh either, and one served often is read again
from the cache in the background before its time there is up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tileserver.blank import transparent_tile
from tileserver.config import Layer
from tileserver.errors import RenderError
from tileserver.freshness import Staleness, etag_of, staleness
from tileserver.grid import Metatile
from tileserver.keys import metatile_lock_key, tile_key
from tileserver.protocols import HotTiles, ReleaseNotices, Renderer, TileStore
from tileserver.services.hot_tier import HotTier, stored_tile
from tileserver.services.hot_tier import rendered_at as _rendered_at
from tileserver.services.lock_wait import LockWait
from tileserver.services.render_lock import RenderLocks
from tileserver.tile_request import TileRequest, key_part, metatile_of, store_path
from tileserver.types import CacheEntry, Tile, TileCoord

log = logging.getLogger("tileserver.render")


class ServingCache(Protocol):
    """The tile cache as the service uses it: failures are misses, never errors (a
    `CacheRing`, or a single `ResilientCache`)."""

    name: str

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]: ...

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> bool: ...

    async def add(self, key: str, value: bytes, ttl: int) -> bool: ...

    async def delete(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Produced:
    tiles: Mapping[TileCoord, bytes]
    source: str
    rendered_at: float | None


TaskKey = tuple[str, int, int, int]  # layer key part, metatile z, row, col


class TileService:
    def __init__(
        self,
        cache: ServingCache,
        renderer: Renderer,
        key_prefix: str,
        lock_timeout: float = 60.0,
        stores: Mapping[str, TileStore] | None = None,
        on_render: Callable[[str, float], None] | None = None,
        hot: HotTiles | None = None,
        hot_max_age: float = 10.0,
        lock_lease: float = 5.0,
        clock: Callable[[], float] = time.time,
        notices: ReleaseNotices | None = None,
    ) -> None:
        self.cache = cache
        self.hot = hot
        self.hot_max_age = hot_max_age
        self._on_render = on_render  # (layer name, seconds) of each metatile rendered
        self.renderer = renderer
        self.stores = dict(stores or {})
        self.key_prefix = key_prefix
        self.lock_timeout = lock_timeout
        self.locks = RenderLocks(cache, lock_lease, clock=clock, notices=notices)
        self._clock = clock  # Unix time: render times are compared across hosts
        self._inflight: dict[TaskKey, asyncio.Task[_Produced]] = {}
        self._rendered: dict[TaskKey, asyncio.Future[_Produced]] = {}  # tiles before written
        self._refreshing: dict[TaskKey, asyncio.Task[None]] = {}  # stale_while_revalidate
        self._hot = None if hot is None else HotTier(hot, hot_max_age, cache, clock)

    @property
    def renders_in_progress(self) -> int:
        return len(self._inflight) + len(self._refreshing)

    def _background(self) -> list[asyncio.Task[None]]:
        """Renders of stale tiles and hot tiles read again: no request waits for them."""
        return [*self._refreshing.values(), *(self._hot.tasks if self._hot else [])]

    async def wait_renders(self) -> None:
        """Returns once the renders under way have ended (their tiles written: answer
        first leaves them running after their first request was answered), and the
        hot tiles being read again."""
        while tasks := [*self._inflight.values(), *self._background()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cancel_renders(self) -> None:
        """Cancels the renders under way, at shutdown once no request waits for them:
        their Memcached locks are released, so other hosts render those metatiles."""
        tasks: list[asyncio.Task[object]] = [*self._inflight.values(), *self._background()]
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

    def hot_reader(self, request: TileRequest) -> Callable[[], Tile | None]:
        """A function that gives the tile `get_tile` would answer from the hot tier,
        without awaiting anything, or None when it is not held there (`get_tile` then
        looks further). Its keys are computed once, here: a hit computes nothing."""
        layer = request.layer
        if layer.cache in self.stores and not layer.is_on_demand(request.coord.z):
            hot_key = f"#store/{layer.cache}/{store_path(request)}"
            return lambda: stored_tile(self.hot, hot_key)
        tier = self._hot
        if tier is None:
            return lambda: None
        key = tile_key(self.key_prefix, key_part(request), request.coord)
        return lambda: tier.tile(layer, key)

    async def _from_store(self, store: TileStore, request: TileRequest) -> Tile | None:
        """A pre-generated tile; None where the layer renders missing ones on demand.

        StoreUnavailable goes up: the HTTP face answers it with a 503.
        """
        layer, grid = request.layer, request.layer.grid
        path = store_path(request)
        hot_key = f"#store/{layer.cache}/{path}"
        hot = stored_tile(self.hot, hot_key)
        if hot is not None:
            return hot
        stored = await store.get_stored(path)
        if stored is not None:
            if self.hot is not None:  # its stamp: when it was stored, in whole seconds
                etag = etag_of(stored.data)
                stamp = int(stored.modified) if stored.modified is not None else 0
                self.hot.put(hot_key, stored.data, self.hot_max_age, stamp, etag)
                return Tile(stored.data, "store", None, etag, stored_at=stored.modified)
            return Tile(stored.data, "store", stored_at=stored.modified)
        if layer.missing_tile == "no_content":
            return Tile(None, "missing")
        if layer.missing_tile == "transparent":
            return Tile(transparent_tile(layer.mime_type, grid.tile_size), "missing")
        return None

    def _fresh(self, layer: Layer, entry: CacheEntry | None) -> bool:
        return entry is not None and staleness(layer, entry.stamp, self._clock()) is Staleness.FRESH

    async def _on_demand(self, request: TileRequest) -> Tile:
        layer, coord = request.layer, request.coord
        part = key_part(request)
        key = tile_key(self.key_prefix, part, coord)
        hot = None if self._hot is None else self._hot.tile(layer, key)
        if hot is not None:
            return hot
        found = await self.cache.get_many([key])
        entry = found.get(key)
        stale: CacheEntry | None = None
        if entry is not None:
            state = staleness(layer, entry.stamp, self._clock())
            if state is Staleness.FRESH:
                rendered_at = _rendered_at(entry.stamp)
                etags = self._keep_hot(layer, {key: entry.value}, entry.stamp, rendered_at)
                return Tile(entry.value, entry.source, rendered_at, etags.get(key, ""))
            if state is Staleness.REVALIDATE:
                self._refresh(request, part, metatile_of(request))
                return Tile(entry.value, "stale", _rendered_at(entry.stamp))
            if state is Staleness.IF_ERROR:
                stale = entry
        try:
            return await self._render_or_wait(request, part)
        except RenderError as exc:
            if stale is None:
                raise
            log.warning(
                "layer %s: render of %s failed, answered with a tile %.0f s past its "
                "expiry (stale_if_error): %s", layer.name, coord,
                self._clock() - stale.stamp - layer.ttl_seconds, exc,
            )  # fmt: skip
            return Tile(stale.value, "stale", _rendered_at(stale.stamp))

    async def _render_or_wait(self, request: TileRequest, part: str) -> Tile:
        coord = request.coord
        metatile = metatile_of(request)
        task_key = (part, metatile.z, metatile.row, metatile.col)
        task = self._inflight.get(task_key)
        first = task is None
        if task is None:
            early: asyncio.Future[_Produced] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._produce(request, part, metatile, early))
            self._inflight[task_key] = task
            task.add_done_callback(lambda done: self._finished(task_key, done, early))
            # Our tile as soon as it is encoded, if the render gets that far first; `wait`
            # cancels neither: a client that goes away leaves the render to the others.
            await asyncio.wait({early, task}, return_when=asyncio.FIRST_COMPLETED)
            if early.done() and not early.cancelled():
                answer = early.result()
                return Tile(answer.tiles[coord], answer.source, answer.rendered_at)
        # The tiles once rendered, before they are written (answered first, as the first
        # tile is); shield: a client that goes away must not cancel a render others wait for.
        rendered = self._rendered.setdefault(task_key, asyncio.get_running_loop().create_future())
        await asyncio.wait({rendered, task}, return_when=asyncio.FIRST_COMPLETED)
        ready = rendered.done() and not rendered.cancelled()
        produced = rendered.result() if ready else await asyncio.shield(task)
        data = produced.tiles.get(coord)
        if data is None:
            # The shared task found its own tile in the cache, not ours: look ours up
            # (and render it, should it be gone) under the same lock discipline.
            produced = await self._produce(request, part, metatile)
            return Tile(produced.tiles[coord], produced.source, produced.rendered_at)
        source = produced.source if first else "coalesced"
        return Tile(data, source, produced.rendered_at)

    def _finished(
        self, key: TaskKey, task: asyncio.Task[_Produced], early: asyncio.Future[_Produced]
    ) -> None:
        self._inflight.pop(key, None)
        if (rendered := self._rendered.pop(key, None)) is not None:
            rendered.cancel()
        if not early.done():
            early.cancel()
        elif not task.cancelled() and task.exception() is not None:
            # Its first tile was answered; the others failed (nobody else may wait for them).
            log.warning("a metatile failed after its first tile was answered: %s",
                        task.exception())  # fmt: skip

    def _dimensions(self, request: TileRequest) -> dict[str, str]:
        names = (d.name for d in request.layer.dimensions)
        return dict(zip(names, request.dimensions, strict=True))

    async def _produce(
        self,
        request: TileRequest,
        part: str,
        metatile: Metatile,
        early: asyncio.Future[_Produced] | None = None,
    ) -> _Produced:
        """The tile of request, from the cache or a render under the metatile's lock;
        `early` gets it as soon as a render has encoded it."""
        layer, coord = request.layer, request.coord
        key = tile_key(self.key_prefix, part, coord)
        lock = metatile_lock_key(self.key_prefix, part, metatile.z, metatile.row, metatile.col)
        lease = await self.locks.acquire(lock)
        wait = LockWait(self.locks, lock, self.lock_timeout)
        try:
            while lease is None:  # another process or host renders it: wait for its tiles
                await wait.pause()
                found = await self.cache.get_many([key, lock])
                entry = found.get(key)
                if entry is not None and self._fresh(layer, entry):
                    return _Produced({coord: entry.value}, entry.source, _rendered_at(entry.stamp))
                holder = found.get(lock)
                if holder is not None and self.locks.is_stale(holder.value):
                    await self.locks.break_stale(lock, holder.value)
                    holder = None
                if holder is None:  # gone without the tile (render failed, flush): take it
                    lease = await self.locks.acquire(lock)
                elif wait.expired:
                    log.warning(
                        "lock %s held for more than %g s: rendering anyway", lock, self.lock_timeout
                    )
                    return await self._render(
                        layer, part, metatile, self._dimensions(request), coord, early
                    )
                else:
                    wait.seen(holder.value)
        finally:
            wait.close()
        async with lease:
            # Rendered elsewhere between our miss and the lock?
            entry = (await self.cache.get_many([key])).get(key)
            if entry is not None and self._fresh(layer, entry):
                return _Produced({coord: entry.value}, entry.source, _rendered_at(entry.stamp))
            dimensions = self._dimensions(request)
            return await self._render(layer, part, metatile, dimensions, coord, early)

    def _refresh(self, request: TileRequest, part: str, metatile: Metatile) -> None:
        """Starts the background render of a metatile whose tile was answered stale, unless
        one is under way here; another process or host holding its lock refreshes it."""
        task_key = (part, metatile.z, metatile.row, metatile.col)
        if task_key in self._refreshing or task_key in self._inflight:
            return
        task = asyncio.create_task(self._revalidate(request, part, metatile))
        self._refreshing[task_key] = task
        task.add_done_callback(lambda _: self._refreshing.pop(task_key, None))

    async def _revalidate(self, request: TileRequest, part: str, metatile: Metatile) -> None:
        layer = request.layer
        key = tile_key(self.key_prefix, part, request.coord)
        lock = metatile_lock_key(self.key_prefix, part, metatile.z, metatile.row, metatile.col)
        try:
            lease = await self.locks.acquire(lock)
            if lease is None:
                return
            async with lease:
                entry = (await self.cache.get_many([key])).get(key)
                if entry is not None and self._fresh(layer, entry):
                    return  # refreshed elsewhere meanwhile
                await self._render(layer, part, metatile, self._dimensions(request))
        except RenderError as exc:
            log.warning("layer %s: background refresh of a stale metatile failed: %s",
                        layer.name, exc)  # fmt: skip

    async def _render(
        self,
        layer: Layer,
        part: str,
        metatile: Metatile,
        dimensions: Mapping[str, str],
        first: TileCoord | None = None,
        early: asyncio.Future[_Produced] | None = None,
    ) -> _Produced:
        """Renders the metatile and writes its tiles to the cache; `early`, when given,
        gets tile `first` as soon as the renderer has encoded it."""
        start = time.perf_counter()
        answered: list[float] = []  # when the first tile was answered (perf_counter)

        def on_first(data: bytes) -> None:
            if early is not None and not early.done() and first is not None:
                answered.append(time.perf_counter())
                early.set_result(_Produced({first: data}, "render", self._clock()))

        wanted = early is not None and first is not None
        tiles = await self.renderer.render(
            layer, metatile, dimensions, first=first if wanted else None,
            on_first=on_first if wanted else None,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        # Its expiry counts from when it is stored, as a Memcached TTL does (or from when
        # its first tile was answered); in whole seconds in the cache: a tile read back
        # goes stale up to 1 s early, never late.
        rendered_at = early.result().rendered_at if answered and early is not None else None
        rendered_at = rendered_at or self._clock()
        stamp = int(rendered_at)
        waiting = self._rendered.pop((part, metatile.z, metatile.row, metatile.col), None)
        if waiting is not None and not waiting.done():
            waiting.set_result(_Produced(tiles, "render", rendered_at))
        if self._on_render is not None:
            self._on_render(layer.name, elapsed)
        items = {tile_key(self.key_prefix, part, coord): data for coord, data in tiles.items()}
        await self.cache.set_many(items, layer.cache_ttl_seconds, stamp)
        self._keep_hot(layer, items, stamp, rendered_at)
        # Once the tiles are written: after this line the cache has them (answer first
        # answers before it).
        log.info(
            "rendered metatile %s matrix=%s row=%d col=%d tiles=%d in %.0f ms%s",
            part,
            layer.grid.matrix_id(metatile.z),
            metatile.row,
            metatile.col,
            len(tiles),
            elapsed * 1000,
            f" (first tile answered after {(answered[0] - start) * 1000:.0f} ms)"
            if answered
            else "",
        )
        return _Produced(tiles, "render", rendered_at)

    def _keep_hot(
        self, layer: Layer, items: Mapping[str, bytes], stamp: int, rendered_at: float | None
    ) -> dict[str, str]:
        """Puts items in the hot tier with their ETags, computed once there; the ETags."""
        return {} if self._hot is None else self._hot.keep(layer, items, stamp, rendered_at)
