"""Waiting for a condition, never for a time: the tests poll what they wait for (a file, a
log line, a count of another process) until it holds. The deadline only bounds a hang: it
is no expected duration, and reaching it fails the test saying what never happened.

    wait_until(lambda: log_path.exists(), "the log file")
    await async_wait_until(lambda: daemon.stats()["cmd_get"] >= 4, "memcached's gets")
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

HANG = 120.0  # seconds: far beyond any wait of the suite on a loaded machine


def wait_until(
    condition: Callable[[], object], what: str, timeout: float = HANG, interval: float = 0.02
) -> bool:
    """True once condition() is true (for `assert wait_until(...)`); AssertionError naming
    `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({timeout:g} s)")
        time.sleep(interval)
    return True


async def async_wait_until(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    hang: float = HANG,
    interval: float = 0.02,
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
            raise AssertionError(f"timed out waiting for {what} ({hang:g} s)")
        await asyncio.sleep(interval)
