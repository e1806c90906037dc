"""A WMS answer handed to a render process as it is read: the cut job's feed.

MapServer sends its PNG over 35-40 ms as it encodes it; the render process inflates and
cuts each piece as it comes instead of waiting for the whole answer (and for its copy
through the pool's pipe). One Unix socket per job, in Linux's abstract namespace (nothing
on disk to clean up): the server listens on it, the render process running the job
connects and reads length-prefixed pieces until an empty one, the end. The server's side
never waits: its transport keeps what the render process has not read yet. An answer that
breaks off is a connection closed before the end, and the render process's cut fails;
the server, which knows why, answers for it. Only a process of the server's own user is
let in (SO_PEERCRED).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import select
import socket
import struct
import sys
from typing import Any, Generic, TypeVar

_LENGTH = struct.Struct(">I")
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
T = TypeVar("T")
AVAILABLE = sys.platform.startswith("linux")  # abstract Unix sockets, SO_PEERCRED


class FeedBroken(ValueError):
    """The answer's feed ended before the answer did (the server stopped reading it)."""


class FeedServer:
    """The server's end, on its event loop; `address` goes in the cut job."""

    def __init__(self) -> None:
        self.address = f"\0tileserver-feed-{os.getpid()}-{secrets.token_hex(8)}"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.setblocking(False)
        self._listener.bind(self.address)
        self._listener.listen(1)
        self._pending: list[bytes] = []  # frames written before the render process came
        self._transport: asyncio.Transport | None = None
        self._ended = False
        self._closed = False
        self._accepting = asyncio.ensure_future(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            with self._listener:
                while True:
                    connection, _ = await loop.sock_accept(self._listener)
                    if _same_user(connection):
                        break
                    connection.close()
            transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, connection)
        except (OSError, RuntimeError):  # closed meanwhile, or its loop is
            return
        if self._closed:
            transport.abort()
            return
        self._transport = transport
        self._send(self._pending)
        self._pending = []
        if self._ended:
            transport.close()  # once what it holds is written

    def _send(self, frames: list[bytes]) -> None:
        transport = self._transport
        if transport is None:
            self._pending.extend(frames)
        elif not transport.is_closing():
            transport.writelines(frames)

    def write(self, data: bytes) -> None:
        """Sends a piece of the answer (never waits)."""
        if data and not self._closed and not self._ended:
            self._send([_LENGTH.pack(len(data)), data])

    def end(self) -> None:
        """The answer is whole: the render process reads the end, then the connection closes."""
        if self._closed or self._ended:
            return
        self._send([_LENGTH.pack(0)])
        self._ended = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Stops the feed: the render process reads a connection closed before the end."""
        if self._closed:
            return
        self._closed = True
        if self._transport is not None:
            if not self._ended:
                self._transport.abort()
        else:  # a render process waiting to be let in reads the end of its connection
            self._accepting.cancel()
            self._listener.close()
        self._pending = []


def _same_user(connection: socket.socket) -> bool:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    _, uid, _ = _CREDENTIALS.unpack(credentials)
    return bool(uid == os.getuid())


class FeedReader:
    """The render process's end: blocking reads of the pieces of the answer."""

    def __init__(self, address: str) -> None:
        self._ended = False
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.connect(address)
        except OSError as exc:
            self._socket.close()
            raise FeedBroken(f"the answer's feed is gone ({exc})") from exc

    def ready(self) -> bool:
        """True when a piece (or the end) can be read without waiting."""
        readable, _, _ = select.select([self._socket], [], [], 0)
        return bool(readable)

    def read(self) -> bytearray | None:
        """The next piece of the answer; None at its end (and after). Raises FeedBroken."""
        if self._ended:
            return None
        (length,) = _LENGTH.unpack(self._exactly(_LENGTH.size))
        if not length:
            self._ended = True
            return None
        return self._exactly(length)

    def rest(self) -> list[bytearray]:
        """The pieces not read yet, to the end."""
        pieces = []
        while (piece := self.read()) is not None:
            pieces.append(piece)
        return pieces

    def _exactly(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            try:
                count = self._socket.recv_into(view[got:])
            except OSError as exc:  # ECONNRESET: let in by nobody
                raise FeedBroken(f"the answer broke off ({exc})") from exc
            if not count:
                raise FeedBroken("the answer broke off")
            got += count
        return buffer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()


class FedJob(Generic[T]):
    """A cut job fed its image as it is read (`MapnikRenderer.cut_as_read`): its feed
    and its result."""

    def __init__(self, feed: FeedServer, job: asyncio.Future[T]) -> None:
        self._feed = feed
        self._job = job

    def write(self, data: bytes) -> None:
        """Hands over the next piece of the image (never waits)."""
        self._feed.write(data)

    async def tiles(self) -> T:
        """Once every piece is written: the tiles, as `MapnikRenderer.cut` returns them
        (InvalidImage when the image is not the metatile's)."""
        self._feed.end()
        return await self._job

    def abort(self) -> None:
        """The image will not be whole (its reading failed): the job is stopped, its
        outcome dropped."""
        self._feed.abort()
        self._job.cancel()
        self._job.add_done_callback(_drop)


def _drop(job: asyncio.Future[Any]) -> None:
    if not job.cancelled():
        job.exception()  # retrieved: not logged as never retrieved
