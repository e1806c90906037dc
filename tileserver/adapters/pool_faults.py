"""A render pool's faults: its dead processes seen, a pool they left hanging ended, and
every job waiting on a pool the renderer gives up on released at once.

`concurrent.futures.ProcessPoolExecutor` notices a dead process itself, most of the time,
and fails the jobs it holds with BrokenProcessPool; `RenderPool` does not count on it:

- A process killed while it sends its result leaves the executor's manager thread
  reading the rest of that message forever: no job of the pool ever ends (`abandon`).
- On CPython 3.11 the manager thread, failing the jobs of a broken pool, stops with an
  InvalidStateError at the first job cancelled while it waited in the pool's queue
  (CPython gh-107219, fixed in 3.12): the jobs after it are never failed, and the pool's
  other processes never stopped. So no job of a pool is ever cancelled here: one nobody
  waits for any more is left to run or fail, and its outcome dropped.
- A pool that is shut down no longer shows its processes: a job still waiting on it
  would not see it dead. So the pool's end releases every job waiting on it.

These look at the executor's internals (defensively) where it has no public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

R = TypeVar("R")

WATCH = 0.5  # seconds between two looks at the render processes while a job waits
NOTICE = 1.0  # seconds the executor has to notice a dead process itself


def lost_process(pool: ProcessPoolExecutor) -> bool:
    """True when a process of pool has died (killed, out of memory)."""
    processes = getattr(pool, "_processes", None) or {}
    return any(p.exitcode is not None for p in list(processes.values()))


def abandon(pool: ProcessPoolExecutor) -> None:
    """Ends a pool left hanging by a dead process. A process killed while it sends its
    result leaves the executor's manager thread reading the rest of that message forever,
    the result lock held (the other processes wait for it): no job of the pool ever ends,
    and shutting it down waits forever. So its processes are killed and the parent's end
    of the result pipe closed: the manager thread reads the end of the pipe, fails the
    jobs still waiting with BrokenProcessPool and stops. (CPython's executor internals,
    looked up defensively.)"""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()


class RenderPool:
    """A `ProcessPoolExecutor` whose jobs are watched while they wait (`run`), and which
    is ended (`end`) once a dead process broke it: its processes killed, every job still
    waiting on it failed with BrokenProcessPool at once, in whatever event loop it waits."""

    def __init__(self, executor: ProcessPoolExecutor) -> None:
        self.executor = executor
        self.ended: str | None = None  # why the pool was given up
        self._lock = threading.Lock()  # `end` may come from another thread (close)
        self._waiting: set[asyncio.Future[None]] = set()  # one per job waiting on the pool

    async def run(self, function: Callable[..., R], *args: Any) -> R:
        """function(*args) in a process of the pool. Raises BrokenProcessPool when the pool
        breaks or is ended meanwhile; a process that died without the executor noticing
        within NOTICE seconds ends the pool (`abandon`), and raises it too.

        A job given up (its caller cancelled or timed out) is not cancelled (see the
        module's docstring): it runs or fails in the pool, and its outcome is dropped."""
        loop = asyncio.get_running_loop()
        ended = self._wait_for_end(loop)
        future: asyncio.Future[R] | None = None
        try:
            future = loop.run_in_executor(self.executor, function, *args)
            watched: set[asyncio.Future[Any]] = {future, ended}
            dead_since: float | None = None
            while True:
                await asyncio.wait(watched, timeout=WATCH, return_when=asyncio.FIRST_COMPLETED)
                if future.done():
                    if future.cancelled():  # by the executor's shutdown(cancel_futures)
                        raise BrokenProcessPool("the render pool was shut down")
                    return future.result()
                if ended.done():
                    raise BrokenProcessPool(f"the render pool was ended: {self.ended}")
                if dead_since is None:
                    dead_since = loop.time() if lost_process(self.executor) else None
                elif loop.time() - dead_since >= NOTICE:
                    self.end("a render process died and the pool hung")
                    raise BrokenProcessPool("a render process died and the pool hung")
        finally:
            with self._lock:
                self._waiting.discard(ended)
            if future is not None and not future.done():
                future.add_done_callback(_drop)

    async def run_within(self, give_up: float, function: Callable[..., R], *args: Any) -> R | None:
        """`run`, for a caller that stops waiting after `give_up` seconds: a job not started
        by then is skipped by the process that takes it (None), so that an overloaded pool
        does not work through renders nobody waits for any more."""
        deadline = time.monotonic() + give_up  # one clock for every process of the host
        return await self.run(unless_late, deadline, function, *args)

    def _wait_for_end(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future of loop, done once the pool is ended."""
        ended = loop.create_future()
        with self._lock:
            if self.ended is not None:
                raise BrokenProcessPool(f"the render pool was ended: {self.ended}")
            self._waiting.add(ended)
        return ended

    def end(self, why: str) -> None:
        """Gives the pool up (once): its processes killed (`abandon`), the jobs waiting on
        it released, the executor shut down without waiting for it."""
        if self._mark_ended(why):
            abandon(self.executor)
            self.executor.shutdown(wait=False, cancel_futures=True)
            self._release()

    def close(self) -> None:
        """Shuts the pool down, waiting for the jobs its processes run (blocks: call it in
        a thread); a pool left hanging by a dead process is ended without waiting. The
        jobs still waiting then are released."""
        if not self._mark_ended("the renderer closed"):
            return
        if lost_process(self.executor):
            abandon(self.executor)
            self.executor.shutdown(wait=False, cancel_futures=True)
        else:
            self.executor.shutdown(wait=True, cancel_futures=True)
        self._release()

    def _mark_ended(self, why: str) -> bool:
        """False when the pool had ended already; no job starts waiting on it after this."""
        with self._lock:
            if self.ended is not None:
                return False
            self.ended = why
            return True

    def _release(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, set()
        for ended in waiting:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                ended.get_loop().call_soon_threadsafe(_set_done, ended)


def unless_late(deadline: float, function: Callable[..., R], *args: Any) -> R | None:
    """function(*args), in a render process, unless `deadline` (time.monotonic) has passed
    while the job waited in the pool's queue: then None, its caller gone."""
    if time.monotonic() > deadline:
        return None
    return function(*args)


def _set_done(ended: asyncio.Future[None]) -> None:
    if not ended.done():
        ended.set_result(None)


def _drop(future: asyncio.Future[Any]) -> None:
    """A job's outcome nobody waits for: retrieved, so that it is not logged as lost."""
    if not future.cancelled():
        future.exception()
