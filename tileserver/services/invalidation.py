"""Invalidation of the on-demand tiles cached in Memcached after a data update
(`generate_tiles --update`).

The server renders the finer levels of a layer on demand, a metatile at a time, and
caches every tile of the metatile. Once the data changed inside an area, every tile of
every metatile that intersects the area is deleted from the cache (a metatile renders
again as a whole), so that nobody is served a tile drawn from the old data.

Finding those metatiles costs as much as the outline of the area, not its surface:
`metatile_blocks` bisects rectangles of metatiles, drops those outside the area and
keeps whole those the area covers, so a city at level 20 is counted in a blink.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tileserver.config import Layer
from tileserver.crs import transformer
from tileserver.grid import Grid
from tileserver.keys import layer_key_part, tile_key
from tileserver.protocols import HotTiles
from tileserver.types import BBox, TileCoord

if TYPE_CHECKING:  # shapely is imported where a geometry is made: see `selection`
    from shapely import Polygon
    from shapely.geometry.base import BaseGeometry

BATCH_KEYS = 10_000  # keys per delete_many call
CONCURRENT_BATCHES = 4


# --- which cached tiles ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetatileBlock:
    """A rectangle of whole metatiles of level z, by metatile index (a tile's row or
    column // meta size), first and last included."""

    z: int
    first_row: int
    last_row: int
    first_col: int
    last_col: int

    @property
    def metatiles(self) -> int:
        return (self.last_row - self.first_row + 1) * (self.last_col - self.first_col + 1)

    def halves(self) -> tuple[MetatileBlock, MetatileBlock]:
        """The block cut in two across its longer side."""
        z, r0, r1, c0, c1 = self.z, self.first_row, self.last_row, self.first_col, self.last_col
        if r1 - r0 >= c1 - c0:
            middle = (r0 + r1) // 2
            return MetatileBlock(z, r0, middle, c0, c1), MetatileBlock(z, middle + 1, r1, c0, c1)
        middle = (c0 + c1) // 2
        return MetatileBlock(z, r0, r1, c0, middle), MetatileBlock(z, r0, r1, middle + 1, c1)


def block_tiles(grid: Grid, block: MetatileBlock, meta_size: int) -> tuple[range, range]:
    """The rows and the columns of the block's tiles, clipped at the edge of the matrix."""
    width, height = grid.matrix_size(block.z)
    rows = range(block.first_row * meta_size, min((block.last_row + 1) * meta_size, height))
    cols = range(block.first_col * meta_size, min((block.last_col + 1) * meta_size, width))
    return rows, cols


def _block_box(grid: Grid, block: MetatileBlock, meta_size: int) -> Polygon:
    import shapely

    rows, cols = block_tiles(grid, block, meta_size)
    span = grid.tile_span(block.z)
    left, top = grid.bbox.minx, grid.bbox.maxy
    return shapely.box(
        left + cols.start * span, top - rows.stop * span, left + cols.stop * span,
        top - rows.start * span,
    )  # fmt: skip


def metatile_blocks(
    grid: Grid, z: int, area: BaseGeometry, meta_size: int
) -> Iterator[MetatileBlock]:
    """Blocks that hold, together, exactly the metatiles of level z intersecting area
    (touching counts: a cache is better emptied too much than too little)."""
    if area.is_empty:
        return
    minx, miny, maxx, maxy = area.bounds
    pad = grid.resolutions[z]  # a point, or a line along a tile edge, has tiles too
    limits = grid.limits(z, BBox(minx - pad, miny - pad, maxx + pad, maxy + pad))
    from shapely.prepared import prep

    prepared = prep(area)
    todo = [
        MetatileBlock(
            z,
            limits.min_row // meta_size,
            limits.max_row // meta_size,
            limits.min_col // meta_size,
            limits.max_col // meta_size,
        )
    ]
    while todo:
        block = todo.pop()
        box = _block_box(grid, block, meta_size)
        if not prepared.intersects(box):
            continue
        if block.metatiles == 1 or prepared.covers(box):
            yield block
            continue
        first, second = block.halves()
        todo += (second, first)  # the first half is looked at first


def reproject(area: BaseGeometry, source: str, target: str) -> BaseGeometry:
    """area (in source's CRS) in target's, its edges cut into 64 pieces or more first so
    that their curve is followed."""
    if source == target or area.is_empty:
        return area
    import shapely
    import shapely.ops

    minx, miny, maxx, maxy = area.bounds
    step = max(maxx - minx, maxy - miny) / 64
    if step > 0:
        area = shapely.segmentize(area, step)
    return shapely.ops.transform(transformer(source, target).transform, area)


def on_grids(
    layer: Layer, area: BaseGeometry, grid: str | None = None
) -> list[tuple[Layer, BaseGeometry]]:
    """The layer on each of its grids, or on `grid` only, with area (in the CRS of that
    grid, else of the layer's first grid) reprojected there and clipped to the layer's bbox
    there (TileCloud-chain's `grids`: one cache per grid); ValueError for an unknown grid."""
    if grid is not None:
        variant = layer.on_grid(grid)
        if variant is None:
            raise ValueError(
                f"layer {layer.name!r} has no grid {grid!r} (its grids: "
                f"{', '.join(layer.grid_names)})"
            )
        return [(variant, clip_to_layer(variant, area))]
    source = layer.grid.srs
    return [(v, clip_to_layer(v, reproject(area, source, v.grid.srs))) for v in layer.variants()]


def clip_to_layer(layer: Layer, area: BaseGeometry) -> BaseGeometry:
    """The part of area (in the layer grid's CRS) inside the layer's bbox: the server
    renders no metatile outside it."""
    import shapely

    return shapely.intersection(area, shapely.box(*layer.bbox.as_tuple()))


@dataclass(frozen=True, eq=False)  # eq=False: never compare or hash the geometries
class Invalidation:
    """The cached tiles of one layer (on its grid `layer.grid`) to delete: those of levels
    `zooms` whose metatile intersects `area` (in the grid's CRS, within the layer's bbox),
    under the key layout of `keys.tile_key` with the layer's style, for every combination
    of its dimensions' values (each is cached apart)."""

    layer: Layer
    zooms: tuple[int, ...]
    area: BaseGeometry
    key_prefix: str

    @property
    def dimension_values(self) -> list[tuple[str, ...]]:
        return list(itertools.product(*(d.values for d in self.layer.dimensions)))

    def blocks(self, z: int) -> Iterator[MetatileBlock]:
        return metatile_blocks(self.layer.grid, z, self.area, self.layer.effective_meta_size)

    def count(self, z: int) -> tuple[int, int]:
        """(metatiles, tiles) of level z, each dimension value counted apart."""
        metatiles = tiles = 0
        for block in self.blocks(z):
            rows, cols = block_tiles(self.layer.grid, block, self.layer.effective_meta_size)
            metatiles += block.metatiles
            tiles += len(rows) * len(cols)
        combinations = len(self.dimension_values)
        return metatiles * combinations, tiles * combinations

    def keys(self) -> Iterator[str]:
        """The cache key of every tile, metatile block by block."""
        layer = self.layer
        parts = [
            layer_key_part(layer.name, layer.wmts_style, values, layer.grid.name)
            for values in self.dimension_values
        ]
        for z in self.zooms:
            for block in self.blocks(z):
                rows, cols = block_tiles(layer.grid, block, layer.effective_meta_size)
                for row in rows:
                    for col in cols:
                        coord = TileCoord(z, row, col)
                        for part in parts:
                            yield tile_key(self.key_prefix, part, coord)


# --- deleting them -------------------------------------------------------------------------


@dataclass
class InvalidationStats:
    """Counters of a deletion; `keys` counts the keys of the batches done."""

    keys: int = 0
    deleted: int = 0  # of those, the keys that were in the cache
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class KeyDeleter(Protocol):
    """What an invalidation needs of a cache: a `TileCache`, or a server's `CacheRing`."""

    async def delete_many(self, keys: Sequence[str]) -> int: ...


async def delete_keys(
    cache: KeyDeleter,
    keys: Iterable[str],
    stats: InvalidationStats,
    *,
    batch_size: int = BATCH_KEYS,
    concurrency: int = CONCURRENT_BATCHES,
    progress: Callable[[InvalidationStats], None] | None = None,
) -> None:
    """Deletes keys from cache, `concurrency` batches at a time, counting into stats.

    `CacheUnavailable` stops every batch and goes up; stats then says how far it got.
    """
    batches = batched(keys, batch_size)

    async def worker() -> None:
        for batch in batches:  # shared by the workers: each takes the next one
            deleted = await cache.delete_many(batch)
            stats.keys += len(batch)
            stats.deleted += deleted
            if progress is not None:
                progress(stats)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        stats.finished = time.monotonic()


class NamedKeyDeleter(KeyDeleter, Protocol):
    name: str


class CacheExpiry:
    """Expires the tiles of an area from a tile cache (/admin/expire), through a
    `delete_many` that skips no server (a `CacheRing`'s): an outage is reported, not
    hidden."""

    def __init__(
        self,
        cache: NamedKeyDeleter,
        key_prefix: str,
        concurrency: int,
        hot: HotTiles | None = None,
    ) -> None:
        self._cache = cache
        self.key_prefix = key_prefix
        self.concurrency = concurrency
        self._hot = hot  # this process's hot tier: its copies go at once

    @property
    def cache_name(self) -> str:
        return self._cache.name

    def plan(self, layer: Layer, zooms: tuple[int, ...], area: BaseGeometry) -> Invalidation:
        return Invalidation(layer, zooms, area, self.key_prefix)

    async def expire(self, invalidations: Iterable[Invalidation], stats: InvalidationStats) -> None:
        """Deletes the invalidations' keys (a layer's, on each of its grids), counting into
        stats; `CacheUnavailable` goes up."""
        keys = itertools.chain.from_iterable(inv.keys() for inv in invalidations)
        await delete_keys(
            self._cache, _forget_hot(keys, self._hot), stats, concurrency=self.concurrency
        )


def _forget_hot(keys: Iterator[str], hot: HotTiles | None) -> Iterator[str]:
    """The keys, each also dropped from this process's hot tier (the other processes'
    drop theirs within `server.hot_cache_max_age`)."""
    for key in keys:
        if hot is not None:
            hot.discard(key)
        yield key
