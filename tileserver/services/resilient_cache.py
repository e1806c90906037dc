"""Keeps serving while a tile cache server is down: misses instead of errors, one log per
outage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from tileserver.errors import CacheTimeout, CacheUnavailable
from tileserver.protocols import TileCache
from tileserver.types import CacheEntry

log = logging.getLogger("tileserver.cache")


class ResilientCache:
    """Wraps one TileCache (one server): a failure turns into a miss (get), a no-op (set,
    delete) or a granted lock (add), and the cache is left alone for `retry_interval`
    seconds so requests do not each wait for a timeout. Logs once when an outage starts
    and once when it ends, however many retries fail in between.

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
        address: str = "",
        while_down: str = "serving without it",
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.inner = cache
        self._on_failure = on_failure
        self._on_change = on_change  # called with False when an outage starts, True at its end
        self.name = cache.name
        self.address = address  # for messages: "127.0.0.1:11211"
        self._where = f" at {address}" if address else ""
        self._while_down = while_down  # what the outage means, for its log line
        self._retry_interval = retry_interval
        self._clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._last_success = float("-inf")  # when a command last got its answer
        self.last_error = ""  # the error that started the outage under way
        self.failures = 0

    @property
    def available(self) -> bool:
        return self._down_since is None

    @property
    def skipping(self) -> bool:
        """True while the cache is down and not due for a retry: calls do not reach it."""
        return self._down_since is not None and self._clock() < self._retry_at

    def down_for(self) -> float:
        """Seconds since the outage under way started (0 when up)."""
        return 0.0 if self._down_since is None else self._clock() - self._down_since

    def mark_down(self, reason: str) -> None:
        """Starts an outage without a failed command (a server silent at start-up)."""
        self._failed(CacheUnavailable(reason), self._clock())

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
            log.debug("%s%s: %s; it answers other commands: still in use", self.name,
                      self._where, exc)  # fmt: skip
            return
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            self.last_error = str(exc)
            log.warning(
                "%s unavailable%s (%s): %s, retrying every %g s",
                self.name,
                self._where,
                exc,
                self._while_down,
                self._retry_interval,
            )
            if self._on_change is not None:
                self._on_change(False)
        self._retry_at = now + self._retry_interval

    def _succeeded(self) -> None:
        self._last_success = self._clock()
        if self._down_since is not None:
            log.warning("%s is back%s after %.1f s", self.name, self._where,
                        self._clock() - self._down_since)  # fmt: skip
            self._down_since = None
            self.last_error = ""
            if self._on_change is not None:
                self._on_change(True)

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        if self.skipping:
            return {}
        started = self._clock()
        try:
            found = await self.inner.get_many(keys)
        except CacheUnavailable as exc:
            self._failed(exc, started)
            return {}
        self._succeeded()
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> bool:
        """True when stored."""
        if self.skipping:
            return False
        started = self._clock()
        try:
            await self.inner.set_many(items, ttl, stamp)
        except CacheUnavailable as exc:
            self._failed(exc, started)
            return False
        self._succeeded()
        return True

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        if self.skipping:
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
        if self.skipping:
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
