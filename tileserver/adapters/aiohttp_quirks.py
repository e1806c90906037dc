"""A quirk of aiohttp's client, absorbed where the adapters that use it open.

When a server goes away while aiohttp is still sending a request (an S3 endpoint or a WMS
killed mid-run), the request fails with a connection error that the adapter translates;
but aiohttp's task that was writing the request body ends with the same reset and nobody
awaits it, so asyncio logs "Task exception was never retrieved" with a traceback. That
report says nothing the translated error has not said. `absorb_orphaned_writes` installs,
once per event loop, an exception handler that logs those at debug level and hands every
other report to the handler that was there before (asyncio's default one otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

_WRITER = "ClientRequest.write_bytes"
_RESETS = (aiohttp.ClientConnectionError, ConnectionError)


def _orphaned_write(context: dict[str, Any]) -> bool:
    future = context.get("future")
    exception = context.get("exception")
    if not isinstance(future, asyncio.Task) or not isinstance(exception, _RESETS):
        return False
    coro = future.get_coro()
    return getattr(coro, "__qualname__", "") == _WRITER


def absorb_orphaned_writes(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install the handler on `loop` (the running one by default), once."""
    loop = loop or asyncio.get_running_loop()
    if getattr(loop.get_exception_handler(), "_absorbs", False):
        return
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _orphaned_write(context):
            log.debug("aiohttp's request writer ended with %r", context.get("exception"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._absorbs = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
