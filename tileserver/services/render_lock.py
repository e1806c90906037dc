"""Render locks as leases: a metatile is rendered once at a time across processes and
hosts, and a lock never outlives its holder by more than a few seconds.

The lock is a cache key taken with the atomic `add`, its value the holder and a deadline
(`host:pid <Unix time>`), its TTL a short lease renewed while the render runs. A holder
that dies, or a release lost in a Memcached outage, leaves a lock that expires within
one lease; a lock whose deadline has passed (a paused Memcached executing, once resumed,
the `add`s buffered while it was stopped) is known to be stale by any waiter, which
takes it over at once instead of waiting for it.

Waiters poll the cache (`lock_wait`); with `ReleaseNotices`, a holder on the same host
also tells them when it releases the lock, so they need not wait for their next poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from tileserver.protocols import ReleaseNotices

log = logging.getLogger("tileserver.render")

CLOCK_SKEW = 1.0  # seconds of clock difference between hosts tolerated on a deadline


class LockCache(Protocol):
    async def add(self, key: str, value: bytes, ttl: int) -> bool: ...

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> bool: ...

    async def delete(self, key: str) -> None: ...


def lock_value(owner: str, deadline: float) -> bytes:
    return f"{owner} {deadline:.3f}".encode()


def lock_owner(value: bytes) -> str:
    """The owner a lock's value names ("" for none)."""
    parts = value.split(maxsplit=1)
    return parts[0].decode(errors="replace") if parts else ""


def lock_deadline(value: bytes) -> float | None:
    """The deadline a lock's value carries; None for a value without one (a lock of an
    older version: it expires with its TTL)."""
    parts = value.split()
    if len(parts) != 2:
        return None
    try:
        return float(parts[1])
    except ValueError:
        return None


class Lease:
    """A lock held: renewed every third of the lease while the `async with` block runs,
    released at its end (even when cancelled)."""

    def __init__(self, locks: RenderLocks, key: str) -> None:
        self._locks = locks
        self.key = key
        self._renewal: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lease:
        self._renewal = asyncio.create_task(self._renew())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
        try:
            await self._locks.cache.delete(self.key)
        finally:
            if self._locks.notices is not None:
                self._locks.notices.released(self.key)

    async def _renew(self) -> None:
        locks = self._locks
        while True:
            await asyncio.sleep(locks.lease / 3)
            await locks.cache.set_many({self.key: locks.value()}, locks.ttl)


class RenderLocks:
    def __init__(
        self,
        cache: LockCache,
        lease: float = 5.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        notices: ReleaseNotices | None = None,
    ) -> None:
        self.cache = cache
        self.lease = lease
        self.ttl = max(1, math.ceil(lease))  # Memcached's TTLs are whole seconds
        self.notices = notices
        default = notices.owner if notices else f"{socket.gethostname()}:{os.getpid()}"
        self.owner = owner or default
        self._clock = clock

    def value(self) -> bytes:
        return lock_value(self.owner, self._clock() + self.lease)

    async def acquire(self, key: str) -> Lease | None:
        """The lease of key's lock, None when another holds it."""
        if await self.cache.add(key, self.value(), self.ttl):
            if self.notices is not None:
                self.notices.held(key)
            return Lease(self, key)
        return None

    def is_stale(self, value: bytes) -> bool:
        """True when a lock's holder let its deadline pass: it died, or its lock was
        written late (by a Memcached resumed from a pause)."""
        deadline = lock_deadline(value)
        return deadline is not None and self._clock() > deadline + CLOCK_SKEW

    async def break_stale(self, key: str, value: bytes) -> None:
        log.info("render lock %s outlived its holder (%s): taken over", key,
                 value.decode(errors="replace")[:100])  # fmt: skip
        await self.cache.delete(key)
