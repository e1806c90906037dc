"""Memcached's text protocol on pipelined connections (asyncio.Protocol).

A connection writes each command at once and reads the replies in the order the commands
were sent (Memcached answers in order): no command waits for another's answer before it
is sent, and no connection is held by one caller. Every reply has a deadline, `timeout`
after its command was written; a reply still missing at its deadline breaks the
connection: it is closed and every command still waiting on it fails with `NoAnswer`, so
that a late reply can never be read as the answer to a later command.

`Batcher` gathers the `get`s asked for in one event-loop iteration into one multi-get:
under load a server process writes one `get k1 k2 ...` per iteration and reads one
reply, instead of a write, a read and a timeout per request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from tileserver.types import CacheEntry


class NoAnswer(Exception):
    """A reply did not come within its budget; the connection was dropped."""


class ProtocolError(ValueError):
    """Memcached answered something the command does not expect (an error line...)."""


class _Reply:
    """What one command waits for. `feed` consumes what it can of `buf` from `pos`: the
    position after what it consumed, and whether the reply is complete (a reply keeps
    what it parsed across calls)."""

    __slots__ = ("deadline", "future")

    def __init__(self, future: asyncio.Future[Any], deadline: float) -> None:
        self.future = future
        self.deadline = deadline

    def feed(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        raise NotImplementedError

    def _done(self, result: object) -> None:
        if not self.future.done():  # a caller that went away cancelled it
            self.future.set_result(result)


class _Lines(_Reply):
    """`count` one-line replies (STORED, DELETED, VERSION ...): the list of lines."""

    __slots__ = ("count", "lines")

    def __init__(self, future: asyncio.Future[Any], deadline: float, count: int) -> None:
        super().__init__(future, deadline)
        self.count = count
        self.lines: list[bytes] = []

    def feed(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        lines = self.lines
        while len(lines) < self.count:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return pos, False
            lines.append(bytes(buf[pos:end]))
            pos = end + 2
        self._done(lines)
        return pos, True


class _Values(_Reply):
    """The reply to a `get`: VALUE lines with their data, then END; a dict by key."""

    __slots__ = ("found", "name")

    def __init__(self, future: asyncio.Future[Any], deadline: float, name: str) -> None:
        super().__init__(future, deadline)
        self.found: dict[str, CacheEntry] = {}
        self.name = name

    def feed(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        found = self.found
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return pos, False
            if end - pos == 3 and buf[pos:end] == b"END":
                self._done(found)
                return end + 2, True
            terms = bytes(buf[pos:end]).split()
            if len(terms) < 4 or terms[0] != b"VALUE":
                raise ProtocolError(f"unexpected reply {bytes(buf[pos:end])[:80]!r}")
            length = int(terms[3])
            start = end + 2
            if len(buf) < start + length + 2:
                return pos, False  # its data is not all here: this line is read again
            if buf[start + length : start + length + 2] != b"\r\n":
                raise ProtocolError(f"a value of {length} bytes not followed by CRLF")
            found[terms[1].decode()] = CacheEntry(
                bytes(buf[start : start + length]), int(terms[2]), self.name
            )
            pos = start + length + 2


class Connection(asyncio.Protocol):
    """One pipelined connection to a server."""

    def __init__(self, address: str, timeout: float, name: str) -> None:
        self.address = address
        self.timeout = timeout
        self.name = name  # the cache's name, carried by every entry read
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pending: deque[_Reply] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pending = self._pending
        pos = 0
        try:
            while pending:
                pos, complete = pending[0].feed(buf, pos)
                if not complete:
                    break
                pending.popleft()
        except (ProtocolError, ValueError, IndexError, UnicodeDecodeError) as exc:
            self._fail(ProtocolError(f"from {self.address}: {exc}"))
            return
        if pos:
            del buf[:pos]
        if buf and not pending:
            self._fail(ProtocolError(f"{self.address} answered a command not sent"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self._fail(ConnectionResetError(f"{self.address} closed the connection"))

    # --- commands ---------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Replies not read yet."""
        return len(self._pending)

    def send(
        self, payload: bytes, reply: Callable[[asyncio.Future[Any], float], _Reply]
    ) -> asyncio.Future[Any]:
        """Writes payload; the future of its reply (`lines`, `values`)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.closed or self._transport is None:
            future.set_exception(ConnectionResetError(f"connection to {self.address} closed"))
            return future
        deadline = self._loop.time() + self.timeout
        self._pending.append(reply(future, deadline))
        self._transport.write(payload)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check)
        return future

    def lines(self, count: int) -> Callable[[asyncio.Future[Any], float], _Reply]:
        return lambda future, deadline: _Lines(future, deadline, count)

    def values(self) -> Callable[[asyncio.Future[Any], float], _Reply]:
        return lambda future, deadline: _Values(future, deadline, self.name)

    def _check(self) -> None:
        """The oldest reply's deadline: broken if it has not come."""
        self._timer = None
        if not self._pending:
            return
        deadline = self._pending[0].deadline
        if self._loop.time() >= deadline:
            self._fail(NoAnswer(f"no answer from {self.address} in {self.timeout:g} s"))
        else:
            self._timer = self._loop.call_at(deadline, self._check)

    def _fail(self, exc: Exception) -> None:
        """Closes the connection: every reply not read fails with exc."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, deque()
        for reply in pending:
            if not reply.future.done():
                reply.future.set_exception(exc)
                # Retrieved here: a caller that went away must not leave it unretrieved.
                reply.future.exception()
        self._buf.clear()
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if not self.closed:
            self._fail(ConnectionResetError(f"connection to {self.address} closed"))


class Connections:
    """Up to `size` pipelined connections to one server, opened when needed; a command
    goes to an open connection with no reply waiting, else to the least busy one."""

    def __init__(self, host: str, port: int, size: int, timeout: float, name: str) -> None:
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self.size = max(1, size)
        self.timeout = timeout
        self.name = name
        self._open: list[Connection] = []
        self._connecting: asyncio.Task[Connection] | None = None

    def ready(self) -> Connection | None:
        """An open connection to send on now, or None when one should be opened first."""
        best: Connection | None = None
        for conn in self._open:
            if conn.closed:
                continue
            if not conn.waiting:
                return conn
            if best is None or conn.waiting < best.waiting:
                best = conn
        live = sum(1 for c in self._open if not c.closed)
        if best is not None and live >= self.size:
            return best
        if best is not None and self._connecting is not None:
            return best  # one is being opened; meanwhile pipeline on this one
        return None

    async def get(self) -> Connection:
        """A connection to send on, opened if needed (within `timeout`)."""
        conn = self.ready()
        if conn is not None:
            return conn
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.ensure_future(self._connect())
            task.add_done_callback(self._connected)
        return await asyncio.shield(task)

    def _connected(self, task: asyncio.Task[Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # every waiter's failure; retrieved even when none waits

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self.address, self.timeout, self.name), self.host, self.port
                )
        except TimeoutError as exc:
            raise NoAnswer(f"no connection to {self.address} in {self.timeout:g} s") from exc
        self._open = [c for c in self._open if not c.closed]
        self._open.append(conn)
        return conn

    async def fill(self) -> None:
        """Opens connections up to `size` (at start-up: a server process's descriptors are
        then as many as they will be, and no request pays for a connect)."""
        missing = self.size - sum(1 for c in self._open if not c.closed)
        if missing <= 0:
            return
        results = await asyncio.gather(
            *(self._connect() for _ in range(missing)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        for conn in self._open:
            conn.close()
        self._open.clear()


class Batcher:
    """The `get`s of one event-loop iteration as one multi-get on `connections`."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        self._keys: dict[str, None] = {}
        self._waiters: list[tuple[Sequence[str], asyncio.Future[dict[str, CacheEntry]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, keys: Sequence[str]) -> asyncio.Future[dict[str, CacheEntry]]:
        """The entries of keys found, once the batch of this iteration is answered."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, CacheEntry]] = loop.create_future()
        if not self._waiters:
            loop.call_soon(self._flush)
        self._waiters.append((keys, future))
        for key in keys:
            self._keys[key] = None
        return future

    def _flush(self) -> None:
        keys, self._keys = self._keys, {}
        waiters, self._waiters = self._waiters, []
        payload = b"get " + " ".join(keys).encode() + b"\r\n"
        conn = self._connections.ready()
        if conn is not None:
            self._deliver(conn.send(payload, conn.values()), waiters)
            return
        task = asyncio.ensure_future(self._send_later(payload, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_later(
        self,
        payload: bytes,
        waiters: list[tuple[Sequence[str], asyncio.Future[dict[str, CacheEntry]]]],
    ) -> None:
        try:
            conn = await self._connections.get()
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else ConnectionResetError("cancelled")
            for _, future in waiters:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        self._deliver(conn.send(payload, conn.values()), waiters)

    @staticmethod
    def _deliver(
        reply: asyncio.Future[dict[str, CacheEntry]],
        waiters: list[tuple[Sequence[str], asyncio.Future[dict[str, CacheEntry]]]],
    ) -> None:
        def done(reply: asyncio.Future[dict[str, CacheEntry]]) -> None:
            exc = reply.exception()
            if exc is not None:
                for _, future in waiters:
                    if not future.done():
                        future.set_exception(exc)
                return
            found = reply.result()
            if len(waiters) == 1:
                keys, future = waiters[0]
                if not future.done():
                    future.set_result(found)
                return
            for keys, future in waiters:
                if not future.done():
                    future.set_result({k: found[k] for k in keys if k in found})

        reply.add_done_callback(done)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
