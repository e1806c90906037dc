"""Unit tests of tileserver.services.invalidation: which metatiles an area holds, the keys
of their tiles, and the batched deletion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry.base import BaseGeometry

from tests.support.configs import single_layer
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.config import Layer
from tileserver.errors import CacheUnavailable
from tileserver.grid import Grid
from tileserver.keys import layer_key_part, tile_key
from tileserver.services.invalidation import (
    Invalidation,
    InvalidationStats,
    clip_to_layer,
    delete_keys,
    metatile_blocks,
)
from tileserver.services.tile_filters import tiles_area
from tileserver.types import BBox, TileCoord


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Layer:
    return single_layer(
        tmp_path_factory.mktemp("invalidation"),
        levels=22,
        wmts_style="night",
        dimensions=[{"name": "TIME", "values": ["2020", "2021"], "default": "2021"}],
    )


def point(grid: Grid, z: int, u: float, v: float) -> tuple[float, float]:
    """The point u tiles right of and v tiles below the grid's top-left corner."""
    span = grid.tile_span(z)
    return grid.bbox.minx + u * span, grid.bbox.maxy - v * span


def brute_force(grid: Grid, z: int, area: BaseGeometry, meta_size: int) -> set[tuple[int, int]]:
    """(row, col) of every metatile of level z whose box intersects area, one by one over
    the metatiles around the area's bounds."""
    pad = grid.tile_span(z) * meta_size
    minx, miny, maxx, maxy = area.bounds
    limits = grid.limits(z, BBox(minx - pad, miny - pad, maxx + pad, maxy + pad))
    width, height = grid.matrix_size(z)
    rows = range(limits.min_row - limits.min_row % meta_size, limits.max_row + 1, meta_size)
    cols = range(limits.min_col - limits.min_col % meta_size, limits.max_col + 1, meta_size)
    found = set()
    for row in rows:
        for col in cols:
            # Corners computed as `point` does, so that a point on a corner touches it.
            last_row, last_col = min(row + meta_size, height), min(col + meta_size, width)
            corners = (*point(grid, z, col, last_row), *point(grid, z, last_col, row))
            if shapely.box(*corners).intersects(area):
                found.add((row, col))
    return found


def expand(grid: Grid, z: int, area: BaseGeometry, meta_size: int) -> list[tuple[int, int]]:
    return [
        (row * meta_size, col * meta_size)
        for block in metatile_blocks(grid, z, area, meta_size)
        for row in range(block.first_row, block.last_row + 1)
        for col in range(block.first_col, block.last_col + 1)
    ]


# Points in tile units, on tile edges half the time (touching is the tricky case).
units = st.integers(0, 32).map(lambda n: n / 2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(units, units), min_size=1, max_size=6),
    st.sampled_from([1, 2, 3, 8]),
    st.sampled_from([4, 5]),
    st.booleans(),
)
def test_blocks_hold_exactly_the_metatiles_that_intersect_the_area(
    layer: Layer,
    points: list[tuple[float, float]],
    meta_size: int,
    z: int,
    buffered: bool,
) -> None:
    """Points, lines and polygons, from the grid's corner to past the matrix edge (level 4
    has 16 x 16 tiles: metatiles of 3 are clipped there)."""
    grid = layer.grid
    area = shapely.MultiPoint([point(grid, z, u, v) for u, v in points]).convex_hull
    if buffered:
        area = area.buffer(grid.tile_span(z) / 3)
    found = expand(grid, z, area, meta_size)
    assert len(found) == len(set(found)), "blocks overlap"
    assert set(found) == brute_force(grid, z, area, meta_size)


def test_a_large_area_costs_its_outline(layer: Layer) -> None:
    grid, z, meta_size = layer.grid, 20, 8
    # Tile rows 5 to 4805 and columns 1003 to 9003, cut in the middle of them: metatile
    # rows 0 to 600 and columns 125 to 1125, partial on every side.
    area = shapely.box(*point(grid, z, 1003.5, 4805.5), *point(grid, z, 9003.5, 5.5))
    started = time.perf_counter()
    blocks = list(metatile_blocks(grid, z, area, meta_size))
    elapsed = time.perf_counter() - started
    rows, cols = 601, 1001
    assert sum(block.metatiles for block in blocks) == rows * cols
    assert len(blocks) < 8 * (rows + cols), len(blocks)  # not rows * cols
    assert elapsed < 2
    tiles = Invalidation(layer, (z,), area, "p/").count(z)[1]
    assert tiles == rows * cols * meta_size**2 * 2  # each TIME value is cached apart


def test_tile_list_area_holds_the_tiles_not_their_neighbours(layer: Layer) -> None:
    grid = layer.grid
    tile = TileCoord(10, 300, 500)
    area = tiles_area(grid, [tile, tile])
    assert expand(grid, 10, area, 1) == [(300, 500)]
    assert sorted(expand(grid, 11, area, 1)) == [(600, 1000), (600, 1001), (601, 1000), (601, 1001)]
    assert expand(grid, 9, area, 1) == [(150, 250)]


def test_keys_are_the_servers_keys_of_every_tile_of_the_metatiles(layer: Layer) -> None:
    grid = layer.grid
    # A point: one metatile per level, clipped at the edge of level 1's 2 x 2 matrix.
    area = shapely.Point(point(grid, 5, 17.5, 9.5))
    invalidation = Invalidation(layer, (1, 5, 6), area, "p/")
    # Every value of the TIME dimension is cached apart: each is expired.
    assert [invalidation.count(z) for z in (1, 5, 6)] == [(2, 8), (2, 128), (2, 128)]
    keys = list(invalidation.keys())
    parts = [layer_key_part("l", "night", (time,), "g") for time in ("2020", "2021")]
    assert parts[1] == "l/night/2021/g"
    coords = [TileCoord(1, r, c) for r in range(2) for c in range(2)]
    coords += [TileCoord(5, r, c) for r in range(8, 16) for c in range(16, 24)]
    coords += [TileCoord(6, r, c) for r in range(16, 24) for c in range(32, 40)]
    assert keys == [tile_key("p/", part, coord) for coord in coords for part in parts]
    assert keys[:2] == ["p/l/night/2020/g/1/0/0", "p/l/night/2021/g/1/0/0"]


def test_clip_to_layer_keeps_the_part_inside_the_layer_bbox(tmp_path: Path) -> None:
    layer = single_layer(tmp_path, bbox=[0, 0, 1000, 1000])
    beyond = shapely.box(500, 500, 50000, 50000)
    area = clip_to_layer(layer, beyond)
    assert area.equals(shapely.box(500, 500, 1000, 1000))
    assert clip_to_layer(layer, shapely.box(2000, 2000, 3000, 3000)).is_empty
    # The server renders no metatile outside the layer's bbox: none to invalidate there.
    metatiles, tiles = Invalidation(layer, (16,), area, "p/").count(16)
    assert metatiles == len(brute_force(layer.grid, 16, area, 8))
    assert metatiles < len(brute_force(layer.grid, 16, beyond, 8))
    assert tiles == 64 * metatiles


# --- deleting ----------------------------------------------------------------------------


async def test_delete_keys_deletes_in_batches_and_counts() -> None:
    cache = MemoryCache(1_000_000)
    await cache.set_many({f"k{i}": b"v" for i in range(0, 50, 2)}, ttl=60)
    stats = InvalidationStats()
    seen: list[int] = []
    keys = (f"k{i}" for i in range(50))
    await delete_keys(cache, keys, stats, batch_size=7, concurrency=3,
                      progress=lambda s: seen.append(s.keys))  # fmt: skip
    assert (stats.keys, stats.deleted) == (50, 25)
    assert len(seen) == 8 and seen[-1] == 50
    assert await cache.get_many([f"k{i}" for i in range(50)]) == {}
    assert stats.finished is not None


class FailingCache(MemoryCache):
    """Fails at its third delete_many; the others wait a little, to be cancelled."""

    def __init__(self) -> None:
        super().__init__(1_000_000)
        self.calls = 0
        self.cancelled = 0

    async def delete_many(self, keys: Sequence[str]) -> int:
        self.calls += 1
        if self.calls == 3:
            raise CacheUnavailable("memcached delete: no answer in 1 s")
        try:
            await asyncio.sleep(0.05 if self.calls < 3 else 10)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return await super().delete_many(keys)


async def test_delete_keys_stops_every_batch_at_the_first_failure() -> None:
    cache = FailingCache()
    stats = InvalidationStats()
    with pytest.raises(CacheUnavailable, match="no answer"):
        await delete_keys(cache, (f"k{i}" for i in range(100)), stats, batch_size=10,
                          concurrency=3)  # fmt: skip
    assert cache.cancelled == 2  # the two batches in flight with the failed one
    assert stats.keys == 0
    assert stats.finished is not None
