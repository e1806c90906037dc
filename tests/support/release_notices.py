"""Two UnixReleaseNotices owners over real Unix datagram sockets, standing for two
processes of one host: a lock's holder that says when it has read its socket, and a
waiter (tests/adapters/test_release_notices, tests/services/test_lock_wait)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tileserver.adapters.release_notices import UnixReleaseNotices


class Holder(UnixReleaseNotices):
    """Sets `read` each time it has read its socket (the datagrams are handled in a later
    turn of the loop than they are sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()

    def _read(self) -> None:
        super()._read()
        self.read.set()


@contextlib.asynccontextmanager
async def holder_and_waiter() -> AsyncIterator[tuple[Holder, UnixReleaseNotices]]:
    """Both opened, closed at the block's end."""
    holder, waiter = Holder(), UnixReleaseNotices()
    assert holder.open() and waiter.open()
    try:
        yield holder, waiter
    finally:
        holder.close()
        waiter.close()
