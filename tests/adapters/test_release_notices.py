"""UnixReleaseNotices: a render lock's holder tells the owners that asked, over real Unix
datagram sockets (two owners in one process stand for two processes of one host)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.release_notices import Holder, holder_and_waiter
from tileserver.adapters.release_notices import UnixReleaseNotices

LOCK = "tileserver/lock/l/17/1/2"


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Holder, UnixReleaseNotices]]:
    async with holder_and_waiter() as pair:
        yield pair


async def test_a_waiter_is_told_when_the_holder_releases(
    pair: tuple[Holder, UnixReleaseNotices],
) -> None:
    holder, waiter = pair
    other_lock = "tileserver/lock/l/17/9/9"
    holder.held(LOCK)
    holder.held(other_lock)
    notice = waiter.watch(LOCK, holder.owner)
    other = waiter.watch(other_lock, holder.owner)
    while holder.told(LOCK) + holder.told(other_lock) < 2:  # both requests read
        holder.read.clear()
        await holder.read.wait()
    assert not notice.done()  # nothing released yet
    holder.released(LOCK)
    await asyncio.wait_for(notice, 60)
    assert holder.told(LOCK) == 0 and holder.told(other_lock) == 1
    assert not other.done()  # another lock, still held: not told


async def test_a_holder_answers_at_once_for_a_lock_it_does_not_hold(
    pair: tuple[Holder, UnixReleaseNotices],
) -> None:
    """Released before the request came (or never its): the waiter looks again now."""
    holder, waiter = pair
    await asyncio.wait_for(waiter.watch(LOCK, holder.owner), 60)
    assert holder.told(LOCK) == 0


async def test_an_owner_wakes_its_own_waiters_without_a_datagram() -> None:
    notices = UnixReleaseNotices()  # not even opened
    notices.held(LOCK)
    notice = notices.watch(LOCK, notices.owner)
    notices.released(LOCK)
    await asyncio.wait_for(notice, 60)


async def test_a_holder_that_is_not_there_leaves_the_waiter_to_poll(
    pair: tuple[Holder, UnixReleaseNotices],
) -> None:
    _, waiter = pair
    notice = waiter.watch(LOCK, "elsewhere:1")  # another host's owner: no such socket here
    await asyncio.sleep(0.01)
    assert not notice.done()
    waiter.unwatch(LOCK, notice)
    notice.cancel()


async def test_an_owner_name_is_bound_once() -> None:
    first = UnixReleaseNotices()
    assert first.open()
    try:
        assert not UnixReleaseNotices(first.owner).open()
    finally:
        first.close()
