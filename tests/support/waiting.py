"""Waiting for a condition, never for a time: the tests poll what they wait for (a file, a
log line, a count of another process) until it holds. The deadline only bounds a hang: it
is no expected duration (unless a test says otherwise: "gone within 5 s"), and reaching it
fails the test saying what never happened, with `detail()` when given (evaluated then).

    wait_until(lambda: log_path.exists(), "the log file")
    wait_until(lambda: not alive(pid), "the process gone", 5, detail=lambda: descendants(1))
    await async_wait_until(lambda: daemon.stats()["cmd_get"] >= 4, "memcached's gets")
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

HANG = 120.0  # seconds: far beyond any wait of the suite on a loaded machine


def _timed_out(what: str, timeout: float, detail: Callable[[], object] | None) -> AssertionError:
    message = f"timed out waiting for {what} ({timeout:g} s)"
    return AssertionError(message if detail is None else f"{message}: {detail()}")


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout: float = HANG,
    interval: float = 0.02,
    *,
    detail: Callable[[], object] | None = None,
) -> bool:
    """True once condition() is true (for `assert wait_until(...)`); AssertionError naming
    `what` (and `detail()`) after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, detail)
        time.sleep(interval)
    return True


async def async_wait_until(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    hang: float = HANG,  # `timeout` in wait_until (ruff's ASYNC109 keeps the name for asyncio)
    interval: float = 0.02,
    *,
    detail: Callable[[], object] | None = None,
) -> None:
    """wait_until for a coroutine: condition may be a plain or an async function. For
    states outside this event loop (another process, a file); inside it, wait on an
    asyncio.Event instead."""
    deadline = time.monotonic() + hang
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise _timed_out(what, hang, detail)
        await asyncio.sleep(interval)
