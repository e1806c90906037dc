"""tests/support/waiting.py: a wait ends when its condition holds, and one that never
holds fails naming what was awaited, with its detail as it was at the deadline."""

from __future__ import annotations

import pytest

from tests.support.waiting import async_wait_until, wait_until


def test_wait_until_returns_once_the_condition_holds() -> None:
    calls: list[int] = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3, "three calls", interval=0)
    assert len(calls) == 3


def test_wait_until_names_what_never_happened_and_its_detail_at_the_deadline() -> None:
    polls: list[int] = []
    with pytest.raises(AssertionError) as failure:
        wait_until(
            lambda: polls.append(1),  # never true
            "the moon",
            0.05,
            0.01,
            detail=lambda: f"{len(polls)} polls",
        )
    message = str(failure.value)
    assert message.startswith("timed out waiting for the moon (0.05 s): ")
    assert message.endswith(f"{len(polls)} polls") and len(polls) >= 2


async def test_async_wait_until_awaits_an_async_condition_and_names_what_never_happened() -> None:
    calls: list[int] = []

    async def third_call() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await async_wait_until(third_call, "three calls", interval=0)
    assert len(calls) == 3
    with pytest.raises(AssertionError, match=r"^timed out waiting for nothing \(0\.01 s\): 7$"):
        await async_wait_until(lambda: False, "nothing", 0.01, 0.001, detail=lambda: 7)
