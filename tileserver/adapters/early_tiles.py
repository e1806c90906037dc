"""Answer first's channel from the render processes to the server process: a job's first
tile, sent as soon as it is encoded while the process goes on encoding the others.

One channel per render pool: a process killed while it writes can leave a partial message,
which only its own pool's channel ever sees (a broken pool is replaced together with its
channel). The render processes take turns writing under an flock on a temporary file, not
a multiprocessing Lock: the kernel releases it when its holder dies, and there is no
POSIX semaphore for multiprocessing's resource tracker to report as leaked at shutdown.
The server's side never blocks on it: the reading thread is stopped through a pipe only
the server writes to.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

_JOB = struct.Struct("<Q")  # the job's early id, before the tile's bytes


_lock_fds: dict[str, int] = {}  # in a render process: the lock file, opened once


@contextlib.contextmanager
def _turn(lock_path: str) -> Iterator[None]:
    """This process's turn to write on the shared pipe (an exclusive flock)."""
    fd = _lock_fds.get(lock_path)
    if fd is None:
        fd = _lock_fds[lock_path] = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class EarlySender:
    """The render processes' end (picklable: it travels in the pool's initargs)."""

    writer: Any  # multiprocessing Connection
    lock_path: str  # several processes write to one pipe, one at a time (flock)

    def send(self, job: int, data: bytes) -> None:
        """Sends a job's first tile; a closed channel costs only the head start (the tile
        comes back with the others anyway)."""
        message = _JOB.pack(job) + data
        with contextlib.suppress(OSError), _turn(self.lock_path):
            self.writer.send_bytes(message)


class EarlyTiles:
    """The server's end: a thread reads the pipe and hands each (job, tile) to `arrived`,
    in that thread (a pool may serve several event loops, one after the other: tests)."""

    def __init__(self, context: Any, arrived: Callable[[int, bytes], None]) -> None:
        self._reader, writer = context.Pipe(duplex=False)
        fd, self._lock_path = tempfile.mkstemp(prefix="tileserver-early-", suffix=".lock")
        os.close(fd)
        self.sender = EarlySender(writer, self._lock_path)
        self._stop_reader, self._stop = context.Pipe(duplex=False)
        self._arrived = arrived
        self._thread = threading.Thread(target=self._read, name="early tiles", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while self._stop_reader not in wait([self._reader, self._stop_reader]):
                message = self._reader.recv_bytes()
                (job,) = _JOB.unpack_from(message)
                self._arrived(job, message[_JOB.size :])
        except (EOFError, OSError):  # the pipe is closed
            pass
        finally:
            for end in (self._reader, self._stop_reader):
                end.close()

    def close(self) -> None:
        """Stops the reading thread and closes the server's ends; never blocks. A thread
        reading a message a killed process left half-written reads the end of the pipe
        once the pool's processes are gone too (the server's copy of the writing end is
        closed here)."""
        with contextlib.suppress(OSError):
            self._stop.send_bytes(b"")
        for end in (self._stop, self.sender.writer):
            with contextlib.suppress(OSError):
                end.close()
        with contextlib.suppress(OSError):  # processes that still have it open keep theirs
            os.unlink(self._lock_path)
