"""The hot tier as the tile service uses it: rendered tiles kept in process memory
(`HotTiles`) for at most `max_age` seconds and never past their layer's expiry, each with
its ETag, so that a hit makes no round trip and hashes nothing.

A tile served in the second half of its time there is read again from the shared cache in
the background (one read at a time per tile) and kept on for another `max_age` if the
cache still has it fresh: a tile served often never waits for the cache when its time is
up. One flushed, expired or updated in the cache (or the cache down) is not kept on: its
hot copy lives out its time, as it would have without the re-read, so a flush still shows
within `max_age`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from tileserver.config import Layer
from tileserver.freshness import Staleness, etag_of, fresh_for, staleness
from tileserver.protocols import HotTiles
from tileserver.types import CacheEntry, Tile


class CacheReads(Protocol):
    """The shared cache's reads (failures are misses, never errors)."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]: ...


def rendered_at(stamp: int) -> float | None:
    """The Unix time of a cached tile's stamp; None when unknown (0)."""
    return float(stamp) if stamp > 0 else None


def stored_tile(tiles: HotTiles | None, key: str) -> Tile | None:
    """The hot copy of a pre-generated tile (its stamp: when it was stored); None when
    not held (or no hot tier)."""
    entry = None if tiles is None else tiles.get(key)
    if entry is None:
        return None
    return Tile(entry.value, "hot", None, entry.etag, stored_at=rendered_at(entry.stamp))


class HotTier:
    def __init__(
        self,
        tiles: HotTiles,
        max_age: float,
        cache: CacheReads,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tiles = tiles
        self.max_age = max_age
        self._cache = cache
        self._clock = clock  # Unix time, as the tiles' stamps
        self._rereads: dict[str, asyncio.Task[None]] = {}  # by key

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The re-reads under way."""
        return list(self._rereads.values())

    def hit(self, layer: Layer, key: str) -> CacheEntry | None:
        """The hot copy of a rendered tile, if held; in the second half of its time, its
        re-read starts (unless one is under way)."""
        held = self.tiles.held(key)
        if held is None:
            return None
        entry, left = held
        if left < self.max_age / 2 and key not in self._rereads:
            self._reread(layer, key, entry, left)
        return entry

    def tile(self, layer: Layer, key: str) -> Tile | None:
        """The hot copy of a rendered tile as the tile service answers it (`hit`)."""
        hot = self.hit(layer, key)
        return None if hot is None else Tile(hot.value, "hot", rendered_at(hot.stamp), hot.etag)

    def keep(
        self,
        layer: Layer,
        items: Mapping[str, bytes],
        stamp: int,
        made_at: float | None,
        known_etag: str = "",
    ) -> dict[str, str]:
        """Puts rendered tiles in the tier with their ETags, computed once here
        (`known_etag`: the ETag of a single item, when known); the ETags."""
        ttl = min(self.max_age, fresh_for(layer, made_at, self._clock()))
        if ttl <= 0:
            return {}
        etags = {}
        for key, data in items.items():
            etag = etags[key] = known_etag or etag_of(data)
            self.tiles.put(key, data, ttl, stamp, etag)
        return etags

    def _reread(self, layer: Layer, key: str, hot: CacheEntry, left: float) -> None:
        """Starts the re-read of a hot tile, unless its layer's expiry would not let it
        stay longer anyway."""
        if fresh_for(layer, rendered_at(hot.stamp), self._clock()) <= left:
            return
        task = asyncio.create_task(self._keep_on(layer, key, hot))
        self._rereads[key] = task
        task.add_done_callback(lambda _: self._rereads.pop(key, None))

    async def _keep_on(self, layer: Layer, key: str, hot: CacheEntry) -> None:
        entry = (await self._cache.get_many([key])).get(key)
        if entry is None or staleness(layer, entry.stamp, self._clock()) is not Staleness.FRESH:
            return
        now_hot = self.tiles.get(key)
        if now_hot is not None and now_hot is not hot:
            return  # replaced meanwhile (by a render): that copy is at least as new
        etag = hot.etag if entry.value == hot.value else ""  # the same bytes: the same ETag
        self.keep(layer, {key: entry.value}, entry.stamp, rendered_at(entry.stamp), etag)
