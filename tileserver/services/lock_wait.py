"""One request's wait for a metatile whose lock another process or host holds.

The first look at the cache is at once (the holder may have written the tiles and not yet
released its lock), then every poll interval, from `POLL_FIRST` growing to `POLL_MAX`.
Where the holder tells of its release (`ReleaseNotices`: a process of this host), the
wait ends at its notice instead, the polls staying as the fallback.
"""

from __future__ import annotations

import asyncio
import time

from tileserver.services.render_lock import RenderLocks, lock_owner

POLL_FIRST = 0.02  # seconds; a metatile render takes 50 ms and more
# A waiter that is not told sees the tiles at most this long after they land: a slow
# render (a WMS under load: 300-600 ms) seen up to 220 ms late with 0.25 s; one Memcached
# get per waiter and 0.1 s costs nothing next to that.
POLL_MAX = 0.1


class LockWait:
    """`pause` before each look at the cache, `seen` with the lock's value found there,
    `close` at the end."""

    def __init__(self, locks: RenderLocks, key: str, timeout: float) -> None:
        self._notices = locks.notices
        self.key = key
        self._deadline = time.monotonic() + timeout
        self._delay = 0.0  # the first look: at once
        self._holder = b""  # the lock's value last watched
        self._notice: asyncio.Future[None] | None = None

    @property
    def expired(self) -> bool:
        return time.monotonic() > self._deadline

    async def pause(self) -> None:
        """Until the next look: the poll interval, or the holder's notice if sooner."""
        delay = self._delay
        self._delay = min(max(delay * 1.5, POLL_FIRST), POLL_MAX)
        if delay == 0:
            return
        notice = self._notice
        if notice is None or notice.done():
            await asyncio.sleep(delay)
        else:
            await asyncio.wait({notice}, timeout=delay)

    def seen(self, holder: bytes) -> None:
        """The lock is held (its value: `holder`): ask its holder to tell of its release,
        once per value (a holder that answers at once is not asked again and again)."""
        if self._notices is None or holder == self._holder:
            return
        self._holder = holder
        self._forget()
        self._notice = self._notices.watch(self.key, lock_owner(holder))

    def close(self) -> None:
        self._forget()

    def _forget(self) -> None:
        if self._notice is not None and self._notices is not None:
            self._notices.unwatch(self.key, self._notice)
            self._notice.cancel()
            self._notice = None
