"""Render locks' releases told at once to the processes of this host that wait for them,
over a Unix datagram socket in Linux's abstract namespace (one per lock owner).

A process waiting for a metatile another process renders knows the holder from the
lock's value (`host:pid/tag deadline`): it sends the holder's socket the lock's key
("tell me"); the holder answers once the lock is released, its tiles written, or at
once if it does not hold that lock (released meanwhile, or a name that is not its).
The notices only wake waiters early: a waiter still checks the cache and keeps polling
it, so a notice lost (a full socket buffer, a holder on another host, another system)
costs the poll interval, never a tile. Nothing here blocks: a send that cannot be made
at once is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

log = logging.getLogger("tileserver.render")

_PREFIX = b"\0tileserver-locks "
_TELL = b"T"  # a waiter's "tell me when this lock is released"
_RELEASED = b"R"  # a holder's "released"
_SUBSCRIBERS = 64  # waiting processes remembered per lock held (more: they poll)


def default_owner() -> str:
    """`host:pid/tag`: unique on the host, also among the lock owners of one process."""
    return f"{socket.gethostname()}:{os.getpid()}/{secrets.token_hex(3)}"


def address(owner: str) -> bytes:
    return _PREFIX + owner.encode()


class UnixReleaseNotices:
    """`ReleaseNotices` between the processes of one host; `open` it in the event loop
    that uses it, `close` it with that loop's resources."""

    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner or default_owner()
        self._sock: socket.socket | None = None
        self._held: set[str] = set()
        self._told: dict[str, set[bytes]] = {}  # lock held -> addresses to tell
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    def open(self) -> bool:
        """Binds the owner's socket; False (and waiters only poll) where that fails: no
        abstract namespace (not Linux), or the name taken."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(address(self.owner))
        except OSError as exc:
            sock.close()
            log.warning("render lock notices off (waiters poll the cache): %s", exc)
            return False
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)
        self._sock = sock
        return True

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        for futures in self._waiting.values():
            for future in futures:
                future.cancel()
        self._waiting.clear()

    def held(self, key: str) -> None:
        self._held.add(key)

    def told(self, key: str) -> int:
        """How many owners wait to be told of key's release."""
        return len(self._told.get(key, ()))

    def released(self, key: str) -> None:
        """Wakes this owner's own waiters for key and tells the other processes."""
        self._held.discard(key)
        self._wake(key)
        for peer in self._told.pop(key, ()):
            self._send(_RELEASED + key.encode(), peer)

    def watch(self, key: str, holder: str) -> asyncio.Future[None]:
        """A future done at key's next release notice; the holder (the owner in the
        lock's value) is asked to tell, unless it is this owner."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, set()).add(future)
        if holder != self.owner and self._sock is not None:
            self._send(_TELL + key.encode(), address(holder))
        return future

    def unwatch(self, key: str, future: asyncio.Future[None]) -> None:
        futures = self._waiting.get(key)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[key]

    def _wake(self, key: str) -> None:
        for future in self._waiting.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def _send(self, message: bytes, peer: bytes) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):  # nobody there, or its buffer full: it polls
            self._sock.sendto(message, peer)

    def _read(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                message, peer = sock.recvfrom(1024)
            except OSError:  # nothing more to read (BlockingIOError) or closed
                return
            kind, key = message[:1], message[1:].decode(errors="replace")
            if kind == _RELEASED:
                self._wake(key)
            elif kind == _TELL and isinstance(peer, bytes) and peer.startswith(_PREFIX):
                told = self._told.setdefault(key, set()) if key in self._held else None
                if told is None:
                    self._send(_RELEASED + key.encode(), peer)  # not ours (any more)
                elif len(told) < _SUBSCRIBERS:
                    told.add(peer)
