"""The embedded tile cache: an in-process LRU bounded in bytes, with per-item expiry."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from tileserver.types import CacheEntry


class MemoryCache:
    """Same semantics as Memcached (TTL, add, stamps), for a single process and no daemon."""

    name = "memory"

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, CacheEntry]] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def _held(self, key: str, now: float) -> tuple[CacheEntry, float] | None:
        """The live entry of key and the seconds it has left, marked as used; an expired
        one is removed."""
        item = self._items.get(key)
        if item is None:
            return None
        expires_at, entry = item
        left = expires_at - now
        if left <= 0:
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return entry, left

    def _live(self, key: str, now: float) -> CacheEntry | None:
        held = self._held(key, now)
        return None if held is None else held[0]

    def _remove(self, key: str) -> None:
        _, entry = self._items.pop(key)
        self._bytes -= len(entry.value) + len(key)

    def _store(
        self, key: str, value: bytes, ttl: float, now: float, stamp: int, etag: str = ""
    ) -> None:
        if key in self._items:
            self._remove(key)
        size = len(value) + len(key)
        if size > self._max_bytes:
            return
        # As in Memcached, a TTL of 0 means no expiry.
        expires_at = now + ttl if ttl > 0 else float("inf")
        self._items[key] = (expires_at, CacheEntry(value, stamp, self.name, etag))
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._remove(next(iter(self._items)))

    def get(self, key: str) -> CacheEntry | None:
        """The live entry of key, without awaiting."""
        return self._live(key, self._clock())

    def held(self, key: str) -> tuple[CacheEntry, float] | None:
        """The live entry of key and the seconds it has left (inf: no expiry), without
        awaiting: the hot tier's read on every hit."""
        return self._held(key, self._clock())

    def put(self, key: str, value: bytes, ttl: float, stamp: int = 0, etag: str = "") -> None:
        self._store(key, value, ttl, self._clock(), stamp, etag)

    def discard(self, key: str) -> None:
        """Forgets key, if held (the hot tier's part of an invalidation)."""
        if key in self._items:
            self._remove(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        now = self._clock()
        found = {}
        for key in keys:
            entry = self._live(key, now)
            if entry is not None:
                found[key] = entry
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> None:
        now = self._clock()
        for key, value in items.items():
            self._store(key, value, ttl, now, stamp)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        now = self._clock()
        if self._live(key, now) is not None:
            return False
        self._store(key, value, ttl, now, 0)
        return True

    async def delete(self, key: str) -> None:
        if key in self._items:
            self._remove(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        now = self._clock()
        deleted = 0
        for key in keys:
            item = self._items.get(key)
            if item is None:
                continue
            if item[0] > now:  # an expired item does not count
                deleted += 1
            self._remove(key)
        return deleted

    async def close(self) -> None:
        self._items.clear()
        self._bytes = 0
