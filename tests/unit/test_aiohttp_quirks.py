"""The orphaned request writer of aiohttp is logged at debug level; other reports are not."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import aiohttp
import pytest

from tileserver.adapters.aiohttp_quirks import absorb_orphaned_writes


class ClientRequest:  # the name aiohttp's writer task has
    async def write_bytes(self) -> None:
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")


async def broken() -> None:
    raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")


def orphan(loop: asyncio.AbstractEventLoop, coro: Any) -> None:
    task = loop.create_task(coro)
    loop.run_until_complete(asyncio.wait({task}))
    del task
    gc.collect()


def test_an_orphaned_writer_is_debug_and_other_reports_still_reach_the_handler_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        absorb_orphaned_writes(loop)
        absorb_orphaned_writes(loop)  # once per loop: not wrapped twice
        with caplog.at_level(logging.DEBUG, logger="tileserver.adapters.aiohttp_quirks"):
            orphan(loop, ClientRequest().write_bytes())
            assert seen == []
            assert any("request writer" in r.getMessage() for r in caplog.records)
            orphan(loop, broken())
        assert len(seen) == 1
        assert isinstance(seen[0]["exception"], aiohttp.ClientConnectionResetError)
    finally:
        loop.close()


def test_without_a_handler_before_other_reports_go_to_asyncio_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        absorb_orphaned_writes(loop)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            orphan(loop, ClientRequest().write_bytes())
            assert not [r for r in caplog.records if r.name == "asyncio"]
            orphan(loop, broken())
        assert [r for r in caplog.records if "never retrieved" in r.getMessage()]
    finally:
        loop.close()
