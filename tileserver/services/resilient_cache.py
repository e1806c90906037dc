"""Keeps serving while the tile cache is down: misses instead of errors, one log per outage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from tileserver.errors import CacheTimeout, CacheUnavailable
from tileserver.protocols import TileCache

log = logging.getLogger("tileserver.cache")


class ResilientCache:
    """Wraps a TileCache: a failure turns into a miss (get), a no-op (set, delete) or a
    granted lock (add), and the cache is left alone for `retry_interval` seconds so
    requests do not each wait for a timeout. Logs once when an outage starts and once
    when it ends.

    A timeout (`CacheTimeout`) is an outage only if no other command was answered since
    the timed-out one was sent: under load one slow answer must not turn the cache off
    for every request, while a hung server, which answers nobody, still does at once.
    """

    def __init__(
        self,
        cache: TileCache,
        retry_interval: float = 2.0,
        on_failure: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = cache
        self._on_failure = on_failure
        self.name = cache.name
        self._retry_interval = retry_interval
        self._clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._last_success = float("-inf")  # when a command last got its answer
        self.failures = 0

    @property
    def available(self) -> bool:
        return self._down_since is None

    def _skip(self) -> bool:
        return self._down_since is not None and self._clock() < self._retry_at

    def _failed(self, exc: CacheUnavailable, started: float) -> None:
        """A command sent at `started` failed."""
        self.failures += 1
        if self._on_failure is not None:
            self._on_failure()
        if (
            isinstance(exc, CacheTimeout)
            and self._down_since is None
            and self._last_success > started
        ):
            # Slow, not down: other commands were answered while this one waited (a
            # burst of renders writing back, a busy machine). A miss, not an outage.
            log.debug("%s: %s; it answers other commands: still in use", self.name, exc)
            return
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "%s unavailable (%s): serving without it, retrying every %g s",
                self.name,
                exc,
                self._retry_interval,
            )
        self._retry_at = now + self._retry_interval

    def _succeeded(self) -> None:
        self._last_success = self._clock()
        if self._down_since is not None:
            log.warning(
                "%s is back after %.1f s: caching tiles again",
                self.name,
                self._clock() - self._down_since,
            )
            self._down_since = None

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if self._skip():
            return {}
        started = self._clock()
        try:
            found = await self.inner.get_many(keys)
        except CacheUnavailable as exc:
            self._failed(exc, started)
            return {}
        self._succeeded()
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl: int) -> bool:
        """True when stored."""
        if self._skip():
            return False
        started = self._clock()
        try:
            await self.inner.set_many(items, ttl)
        except CacheUnavailable as exc:
            self._failed(exc, started)
            return False
        self._succeeded()
        return True

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        if self._skip():
            return True
        started = self._clock()
        try:
            added = await self.inner.add(key, value, ttl)
        except CacheUnavailable as exc:
            self._failed(exc, started)
            return True
        self._succeeded()
        return added

    async def delete(self, key: str) -> None:
        if self._skip():
            return
        started = self._clock()
        try:
            await self.inner.delete(key)
        except CacheUnavailable as exc:
            self._failed(exc, started)
            return
        self._succeeded()

    async def close(self) -> None:
        await self.inner.close()
