"""Unit tests of tileserver.freshness: RFC 5861's stale windows and truthful headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.configs import single_layer
from tileserver.config import Layer
from tileserver.freshness import Staleness, cache_control, fresh_for, staleness

T = 1_800_000_000  # a render time


def layer(tmp_path: Path, swr: int = 0, sie: int = 0) -> Layer:
    return single_layer(tmp_path, expires=100 / 3600, stale_while_revalidate=swr,
                        stale_if_error=sie)  # fmt: skip


@pytest.mark.parametrize(
    ("swr", "sie", "age", "expected"),
    [
        (0, 0, 0, Staleness.FRESH),
        (0, 0, 99.9, Staleness.FRESH),
        (0, 0, 100, Staleness.EXPIRED),
        (50, 0, 100, Staleness.REVALIDATE),
        (50, 0, 149.9, Staleness.REVALIDATE),
        (50, 0, 150, Staleness.EXPIRED),
        (0, 50, 120, Staleness.IF_ERROR),
        (50, 300, 120, Staleness.REVALIDATE),  # both: answered at once first
        (50, 300, 200, Staleness.IF_ERROR),
        (50, 300, 400, Staleness.EXPIRED),
        (300, 50, 200, Staleness.REVALIDATE),
    ],
)
def test_staleness(tmp_path: Path, swr: int, sie: int, age: float, expected: Staleness) -> None:
    assert staleness(layer(tmp_path, swr, sie), T, T + age) is expected


def test_an_unknown_render_time_is_fresh(tmp_path: Path) -> None:
    """Entries of older versions (no stamp) were stored with the expiry as TTL."""
    assert staleness(layer(tmp_path, 50), 0, T + 10**6) is Staleness.FRESH
    assert fresh_for(layer(tmp_path), None, T) == 100


def test_the_cache_keeps_a_tile_for_its_expiry_and_the_longer_window(tmp_path: Path) -> None:
    assert layer(tmp_path).cache_ttl_seconds == 100
    assert layer(tmp_path, 50, 300).cache_ttl_seconds == 400


def test_headers_without_stale_windows_are_unchanged(tmp_path: Path) -> None:
    assert cache_control(layer(tmp_path), T, T + 99) == ("public, max-age=100", 100)
    assert cache_control(layer(tmp_path), None, T) == ("public, max-age=100", 100)


def test_headers_say_what_is_left_of_freshness_and_of_each_window(tmp_path: Path) -> None:
    both = layer(tmp_path, 50, 300)
    assert cache_control(both, T, T) == (
        "public, max-age=100, stale-while-revalidate=50, stale-if-error=300", 100)  # fmt: skip
    assert cache_control(both, T, T + 40.5) == (
        "public, max-age=59, stale-while-revalidate=50, stale-if-error=300", 59)  # fmt: skip
    # Stale: no promise of freshness, and only what is left of each window.
    assert cache_control(both, T, T + 130) == (
        "public, max-age=0, stale-while-revalidate=20, stale-if-error=270", 0)  # fmt: skip
    assert cache_control(layer(tmp_path, sie=300), T, T + 500) == (
        "public, max-age=0, stale-if-error=0", 0)  # fmt: skip
