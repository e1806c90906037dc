"""Pre-generation of tiles into a tile store (TileCloud-chain's `generate_tiles`).

`TileGenerator` renders a list of metatiles with a Renderer, keeps the tiles a filter
wants (those inside the requested bbox or geometry), drops the empty ones (deleting
them from the store, where an older run may have put them) and writes the others with
one `put_many` per metatile (which tiles: `tile_filters`). A metatile that still fails
after its retries is appended to the error file (`run_files`) and the run goes on. A
store that fails as a whole (`StoreOutage`: full, read-only, unreachable) stops the run
instead, as an interruption would: `stats.store_outage` says why.

Resume: once a metatile's tiles are written, a line naming it is appended to the state
file (`run_files`); a later run given the same state file skips the metatiles listed there. Stores
write atomically, so a run killed at any point leaves whole tiles only, and running it
again finishes the job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tileserver.config import Layer
from tileserver.empty_tiles import is_empty
from tileserver.errors import StoreOutage, TileServerError
from tileserver.grid import Metatile
from tileserver.protocols import Renderer, TileStore
from tileserver.selection import MetatileRef
from tileserver.services.run_files import append_line, close_partial_line, read_state, tile_line
from tileserver.services.tile_filters import TileFilter, metatile_of, wanted_tiles
from tileserver.store_layout import tile_path
from tileserver.types import RenderedTiles, TileCoord

log = logging.getLogger("tileserver.generate")


@dataclass
class TileCounts:
    """Tiles written and dropped as empty since `started`, for local runs and workers."""

    tiles_written: int = 0
    empty_dropped: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started

    @property
    def tiles_per_second(self) -> float:
        elapsed = self.elapsed
        return (self.tiles_written + self.empty_dropped) / elapsed if elapsed > 0 else 0.0


@dataclass
class GenerationStats(TileCounts):
    """Counters of a run; `tiles_per_second` counts the tiles written and dropped."""

    metatiles: int = 0  # in the run's list, resumed ones included
    done: int = 0
    skipped: int = 0  # finished by an earlier run (the state file)
    failed: int = 0
    interrupted: bool = False
    store_outage: str | None = None  # why the run stopped early: the store failed as a whole
    # Why the run stopped early: generation.maxconsecutive_errors metatiles failed in a row.
    too_many_errors: str | None = None

    def add(self, other: GenerationStats) -> None:
        """Adds another run's counters (the layers of one command); keeps this start."""
        self.metatiles += other.metatiles
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.tiles_written += other.tiles_written
        self.empty_dropped += other.empty_dropped
        self.interrupted = self.interrupted or other.interrupted
        self.store_outage = self.store_outage or other.store_outage
        self.too_many_errors = self.too_many_errors or other.too_many_errors
        self.finished = other.finished

    def summary(self) -> str:
        return (
            f"generated: {self.done} metatiles, {self.tiles_written} tiles written, "
            f"{self.empty_dropped} empty dropped, {self.failed} failed, {self.skipped} resumed, "
            f"{self.elapsed:.1f} s, {self.tiles_per_second:.1f} tiles/s"
        )


@dataclass(frozen=True, slots=True)
class MetatileOutcome:
    """What became of one metatile: 'done', 'skipped' (resumed) or 'failed'; `tiles` is
    the number of wanted tiles it holds (written + dropped, when done); `reason` says why
    a metatile failed (the distributed workers put it in the queue's error list)."""

    ref: MetatileRef
    status: Literal["done", "skipped", "failed"]
    tiles: int
    reason: str = ""


Progress = Callable[[MetatileOutcome, GenerationStats], None]


class TileGenerator:
    """Renders metatiles of one layer into its store; see the module docstring.

    `concurrency` metatiles are in flight at once (the render processes plus one, so a
    process never waits for the next job); a failed metatile is tried `retries` more
    times, `backoff` seconds apart, doubling.
    """

    def __init__(
        self,
        layer: Layer,
        renderer: Renderer,
        store: TileStore,
        *,
        dimensions: Mapping[str, str] | None = None,
        wanted: TileFilter | None = None,
        concurrency: int = 2,
        retries: int = 2,
        backoff: float = 0.5,
        error_file: Path | None = None,
        state_file: Path | None = None,
        progress: Progress | None = None,
        max_consecutive_errors: int | None = None,
    ) -> None:
        self.layer = layer
        self.renderer = renderer
        self.store = store
        # Each dimension's value: given, else its default.
        self.dimensions = {d.name: d.default for d in layer.dimensions} | dict(dimensions or {})
        self.wanted = wanted
        self.concurrency = max(1, concurrency)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.error_file = error_file
        self.state_file = state_file
        self.progress = progress
        self.max_consecutive_errors = max_consecutive_errors
        self._consecutive_errors = 0
        self._stopping = False
        self._dimension_values = tuple(self.dimensions[d.name] for d in layer.dimensions)
        # How the state and error files name this run's tiles: the layer's name, with the
        # grid and dimension values where they are not the first grid and the defaults
        # (each grid and value is a tile set of its own).
        self.name = layer.name
        defaults = tuple(d.default for d in layer.dimensions)
        if layer.grid.name != layer.grids[0].name or self._dimension_values != defaults:
            self.name = "/".join((layer.name, layer.grid.name, *self._dimension_values))

    def tile_path(self, coord: TileCoord) -> str:
        """Where a tile of the layer goes in the store."""
        layer, grid = self.layer, self.layer.grid
        return tile_path(
            "", layer.name, layer.wmts_style, self._dimension_values, grid.name,
            grid.matrix_id(coord.z), coord.row, coord.col, layer.extension,
        )  # fmt: skip

    def stop(self) -> None:
        """Stops taking new metatiles; those in flight finish and are recorded."""
        self._stopping = True

    async def run(self, metatiles: Sequence[MetatileRef]) -> GenerationStats:
        stats = GenerationStats(metatiles=len(metatiles))
        finished: set[MetatileRef] = set()
        if self.state_file is not None:
            await asyncio.to_thread(close_partial_line, self.state_file)
            finished = await asyncio.to_thread(
                read_state, self.state_file, self.name, self.layer.effective_meta_size
            )
        todo = []
        for ref in metatiles:
            if ref in finished:
                stats.skipped += 1
                self._report(MetatileOutcome(ref, "skipped", self._count(ref)), stats)
            else:
                todo.append(ref)
        pending = iter(todo)

        async def worker() -> None:
            for ref in pending:  # shared by the workers: each takes the next one
                await self._generate(ref, stats)
                if self._stopping:
                    return

        try:
            if not self._stopping:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(self.concurrency, len(todo))):
                        group.create_task(worker())
        finally:
            stats.finished = time.monotonic()
        stats.interrupted = stats.done + stats.failed < len(todo)
        return stats

    def _wanted_in(self, metatile: Metatile) -> set[TileCoord] | None:
        """The tiles of metatile this run writes; None for all of them."""
        if self.wanted is None:
            return None
        return {t.coord for t in metatile.tiles if self.wanted(t.coord)}

    def _count(self, ref: MetatileRef) -> int:
        return len(wanted_tiles(self.layer, ref, self.wanted))

    def _report(self, outcome: MetatileOutcome, stats: GenerationStats) -> None:
        if self.progress is not None:
            self.progress(outcome, stats)

    async def _generate(self, ref: MetatileRef, stats: GenerationStats) -> None:
        metatile = metatile_of(self.layer, ref)
        rendered: dict[TileCoord, bytes] | None = None
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                if rendered is None:
                    rendered = await self.renderer.render(
                        self.layer, metatile, self.dimensions, self._wanted_in(metatile)
                    )
                written, dropped = await self._write(metatile, rendered)
                break
            except StoreOutage as exc:
                # The whole store fails (full, read-only, unreachable): so would every
                # metatile after this one. Stop, without recording this one anywhere: a
                # run resumed once the store works again generates it.
                if stats.store_outage is None:
                    stats.store_outage = str(exc)
                    log.error("%s metatile %s: the tile store fails, stopping: %s",
                              self.layer.name, tile_line(ref), exc)  # fmt: skip
                self.stop()
                return
            except TileServerError as exc:  # RenderError, StoreUnavailable
                reason = f"{type(exc).__name__}: {exc}"
                where = f"{self.layer.name} metatile {tile_line(ref)}"
                if attempt < attempts:
                    log.warning("%s (try %d/%d): %s", where, attempt, attempts, reason)
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                log.error("%s failed after %d tries: %s", where, attempts, reason)
                await self._record_failure(ref, reason)
                stats.failed += 1
                self._consecutive_errors += 1
                limit = self.max_consecutive_errors
                if limit is not None and self._consecutive_errors >= limit:
                    if stats.too_many_errors is None:
                        stats.too_many_errors = (
                            f"{self._consecutive_errors} metatiles failed in a row "
                            f"(generation.maxconsecutive_errors: {limit}), the last: "
                            + " ".join(reason.split())
                        )
                        log.error("%s: stopping, %s", self.layer.name, stats.too_many_errors)
                    self.stop()
                self._report(MetatileOutcome(ref, "failed", self._count(ref), reason), stats)
                return
        self._consecutive_errors = 0
        if self.state_file is not None:
            line = f"{self.name} {tile_line(ref)}\n"
            await asyncio.to_thread(append_line, self.state_file, line)
        stats.done += 1
        stats.tiles_written += written
        stats.empty_dropped += dropped
        self._report(MetatileOutcome(ref, "done", written + dropped), stats)

    async def _write(
        self, metatile: Metatile, rendered: Mapping[TileCoord, bytes]
    ) -> tuple[int, int]:
        """Writes the wanted tiles, deletes the empty ones; (written, dropped)."""
        detection = self.layer.empty_tile_detection
        # The colours of the tiles all of one colour, as the render saw their pixels.
        uniform = rendered.uniform if isinstance(rendered, RenderedTiles) else {}
        items: dict[str, bytes] = {}
        empty: list[str] = []
        for cut in metatile.tiles:
            coord = cut.coord
            if self.wanted is not None and not self.wanted(coord):
                continue
            data = rendered[coord]
            if is_empty(data, detection, uniform.get(coord)):
                empty.append(self.tile_path(coord))
            else:
                items[self.tile_path(coord)] = data
        if empty:
            await self.store.delete_many(empty)
        if items:
            await self.store.put_many(items, self.layer.mime_type)
        return len(items), len(empty)

    async def _record_failure(self, ref: MetatileRef, reason: str) -> None:
        if self.error_file is None:
            return
        reason = " ".join(reason.split())  # one line
        line = f"{tile_line(ref)}  # {self.name}: {reason}\n"
        await asyncio.to_thread(append_line, self.error_file, line)
