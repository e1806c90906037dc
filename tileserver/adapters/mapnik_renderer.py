"""Mapnik rendering in a pool of worker processes (see mapnik_worker).

Answer first: a job may name a tile to encode first; the render process sends it on the
pool's `EarlyTiles` channel as soon as it is encoded, and `render` hands it to `on_first` while the
other tiles are still being encoded, then returns them all as ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from tileserver.adapters import image_feed, pillow_cut
from tileserver.adapters.early_tiles import EarlyTiles
from tileserver.adapters.mapnik_worker import (
    POSTGIS_PARAMETERS,
    CutJob,
    DatabaseUnavailable,
    InvalidImage,
    MapSpec,
    RenderJob,
    RenderResult,
    cut_image,
    init_worker,
    load_errors,
    ping,
    render_metatile,
)
from tileserver.adapters.pool_faults import RenderPool, lost_process
from tileserver.config import Layer
from tileserver.errors import ConfigError, RenderError
from tileserver.errors import DatabaseUnavailable as DatabaseDown
from tileserver.grid import Metatile
from tileserver.types import RenderedTiles, TileCoord

log = logging.getLogger("tileserver.render")

J = TypeVar("J")

__all__ = ["InvalidImage", "MapnikRenderer", "map_spec", "postgis_parameters"]


def postgis_parameters(layer: Layer) -> tuple[tuple[str, str], ...]:
    """The datasource parameters of the layer's `connection` (a libpq string or URI)."""
    if not layer.connection:
        return ()
    from psycopg import conninfo  # libpq's own parser, so every libpq spelling works

    where = f"layers.{layer.name}.connection"
    try:
        parsed = conninfo.conninfo_to_dict(layer.connection)
    except Exception as exc:
        raise ConfigError([f"{where}: not a libpq connection string ({exc})"]) from exc
    unknown = sorted(set(parsed) - set(POSTGIS_PARAMETERS))
    if unknown:
        raise ConfigError(
            [
                f"{where}: Mapnik's PostGIS datasources take only "
                f"{', '.join(POSTGIS_PARAMETERS)}, not {', '.join(unknown)}"
            ]
        )
    return tuple(sorted((k, str(v)) for k, v in parsed.items() if v is not None))


def _rendered(result: RenderResult) -> RenderedTiles:
    return RenderedTiles(
        {TileCoord(*key): data for key, data in result.tiles.items()},
        {TileCoord(*key): colour for key, colour in result.uniform.items()},
    )


def map_spec(layer: Layer) -> MapSpec:
    """What a render process needs to load a Mapnik layer's style."""
    return MapSpec(
        layer.name, str(layer.mapfile), layer.grid.srs, postgis_parameters(layer),
        layer.data_buffer,
    )  # fmt: skip


class MapnikRenderer:
    """Renders metatiles of `type: mapnik` layers in `processes` worker processes, and
    cuts images rendered elsewhere (`cut`) with the same encoders."""

    def __init__(self, layers: Sequence[Layer], processes: int, timeout: float = 60.0) -> None:
        self._specs = tuple(
            map_spec(layer) for layer in layers if layer.type == "mapnik" and layer.mapfile
        )
        self.processes = processes
        self._timeout = timeout
        self._pool: RenderPool | None = None
        self._early: EarlyTiles | None = None  # the pool's channel of first tiles
        self._early_ids = itertools.count(1)
        # early id: the event loop of its job's render, and where its first tile goes
        self._firsts: dict[int, tuple[asyncio.AbstractEventLoop, Callable[[bytes], None]]] = {}
        self._jobs = 0  # jobs given to the render processes and not ended

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # not fork: the parent runs threads
        if self._early is not None:
            self._early.close()
        self._early = EarlyTiles(context, self._first_read)
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=context,
            initializer=init_worker,
            # A render process dies with this one, even killed by SIGKILL (OOM).
            initargs=(self._specs, os.getpid(), self._early.sender),
        )

    def _first_read(self, early: int, data: bytes) -> None:
        """In the channel's thread: on to the job's event loop."""
        expected = self._firsts.get(early)
        if expected is not None:  # else its job has returned already
            with contextlib.suppress(RuntimeError):  # its loop is closed
                expected[0].call_soon_threadsafe(self._first_arrived, early, data)

    def _first_arrived(self, early: int, data: bytes) -> None:
        expected = self._firsts.pop(early, None)
        if expected is not None:  # else its job has returned already
            expected[1](data)

    def _expect_first(
        self, first: TileCoord | None, on_first: Callable[[bytes], None] | None
    ) -> int:
        """The early id of a job whose first tile goes to on_first (0: none)."""
        if first is None or on_first is None:
            return 0
        early = next(self._early_ids)
        self._firsts[early] = (asyncio.get_running_loop(), on_first)
        return early

    async def start(self) -> None:
        """Starts every render process and checks that each loaded every Mapnik file.

        The executor starts a process only for a job that finds none idle, so as many
        jobs as processes, submitted together, start them all now rather than during
        the first renders (each then imports Mapnik and loads the styles).
        """
        self._pool = RenderPool(self._new_pool())
        loop = asyncio.get_running_loop()
        pool = self._pool.executor
        answers = await asyncio.gather(
            *(loop.run_in_executor(pool, load_errors) for _ in range(self.processes))
        )
        errors = {name: e for answer in answers for name, e in answer.items()}
        if errors:
            await self.close()
            raise ConfigError(
                [f"layers.{name}.mapfile: Mapnik cannot load it: {e}" for name, e in errors.items()]
            )
        down = await loop.run_in_executor(pool, ping)
        for name, error in down.items():
            log.error("layer %s: its database is unavailable, tiles answer 503: %s", name, error)

    async def check(self, wait: float = 5.0) -> tuple[str | None, dict[str, str]]:
        """(None, layers whose database is down) when a render process answers, else
        (what is wrong, {}). A pool whose process died is rebuilt for the next check."""
        pool = self._pool
        if pool is None:
            return "closed", {}
        try:
            async with asyncio.timeout(wait):
                down: dict[str, str] = await pool.run(ping)
        except BrokenProcessPool:
            self._rebuild(pool, "found broken by a readiness check")
            return "down: a render process died (the pool is being restarted)", {}
        except TimeoutError:
            if lost_process(pool.executor):  # hung by a dead process: pool_faults.abandon
                self._rebuild(pool, "hung by a dead render process, found by a readiness check")
                return "down: a render process died (the pool is being restarted)", {}
            return f"busy: no render process answered within {wait:g} s", {}
        return None, down

    def _rebuild(self, pool: RenderPool, why: str) -> None:
        """Replaces a broken pool (once) and ends it: the jobs still waiting on it are
        released, to be run again in the new one."""
        if self._pool is pool:
            log.error("render pool broken (%s): restarting it", why)
            self._pool = RenderPool(self._new_pool())
        pool.end(why)

    async def render(
        self,
        layer: Layer,
        metatile: Metatile,
        dimensions: Mapping[str, str],
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        early = self._expect_first(first, on_first)
        job = RenderJob(
            layer=layer.name,
            bbox=metatile.bbox.as_tuple(),
            width=metatile.width,
            height=metatile.height,
            tile_size=layer.grid.tile_size,
            tiles=pillow_cut.metatile_cuts(metatile, only, first if early else None),
            image_format=layer.output_format,
            variables=tuple(sorted(dimensions.items())),
            srs=layer.grid.srs,
            early=early,
        )
        result: RenderResult | None = None
        self._jobs += 1
        try:
            result = await self._run(render_metatile, job)
        except DatabaseUnavailable as exc:
            raise DatabaseDown(
                f"the database of layer {layer.name!r} is unavailable: {exc}"
            ) from exc
        except RenderError:
            raise
        except Exception as exc:
            raise RenderError(f"Mapnik failed: {exc}") from exc
        finally:
            self._jobs -= 1
            if result is None:  # failed: nothing to hand over
                self._firsts.pop(early, None)
        log.debug(
            "mapnik %s: render %.0f ms, cut+encode %.0f ms",
            layer.name,
            result.render_seconds * 1000,
            result.encode_seconds * 1000,
        )
        return self._tiles(result, early, first)

    def _tiles(self, result: RenderResult, early: int, first: TileCoord | None) -> RenderedTiles:
        """The job's tiles; its first one handed over now if its early message (sent
        before the result, on another pipe) has not been read yet: always before return."""
        tiles = _rendered(result)
        expected = self._firsts.pop(early, None) if early else None
        if expected is not None and first is not None:
            expected[1](tiles[first])
        return tiles

    async def cut(
        self,
        layer: Layer,
        metatile: Metatile,
        image: bytes,
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        """Cuts an image of the metatile (buffer included) into the layer's tiles, `first`
        first, handed to `on_first` as soon as it is encoded.

        Raises InvalidImage when `image` is not an image of the metatile's size.
        """
        early = self._expect_first(first, on_first)
        job = self._cut_job_of(layer, metatile, only, first, early, image=image)
        self._jobs += 1
        try:
            return await self._cut_job(job, early, first)
        finally:
            self._jobs -= 1

    def cut_as_read(
        self,
        layer: Layer,
        metatile: Metatile,
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> image_feed.FedJob[RenderedTiles] | None:
        """As `cut`, for an image handed over as it is read (`ImageFeed.write`); None when
        every render process has a job: a job waiting for a process gains nothing from
        the pieces that came meanwhile, and would hold a process waiting for the rest."""
        if not image_feed.AVAILABLE or self._jobs >= self.processes or self._pool is None:
            return None
        feed = image_feed.FeedServer()
        early = self._expect_first(first, on_first)
        job = self._cut_job_of(layer, metatile, only, first, early, feed=feed.address)
        self._jobs += 1  # now: the next GetMap of this loop iteration sees it
        task = asyncio.ensure_future(self._cut_job(job, early, first))
        task.add_done_callback(lambda _: self._fed_job_done(feed, early))
        return image_feed.FedJob(feed, task)

    @staticmethod
    def _cut_job_of(
        layer: Layer,
        metatile: Metatile,
        only: Collection[TileCoord] | None,
        first: TileCoord | None,
        early: int,
        image: bytes = b"",
        feed: str = "",
    ) -> CutJob:
        """The job cutting metatile's image: `image`, or the one read from `feed`."""
        return CutJob(
            image=image,
            width=metatile.width,
            height=metatile.height,
            tile_size=layer.grid.tile_size,
            tiles=pillow_cut.metatile_cuts(metatile, only, first if early else None),
            image_format=layer.output_format,
            early=early,
            feed=feed,
        )

    def _fed_job_done(self, feed: image_feed.FeedServer, early: int) -> None:
        """Once a fed job has ended, or was cancelled before it started."""
        self._jobs -= 1
        feed.abort()  # a no-op once the image was whole, else the process is not fed
        self._firsts.pop(early, None)

    async def _cut_job(
        self,
        job: CutJob,
        early: int,
        first: TileCoord | None,
    ) -> RenderedTiles:
        result: RenderResult | None = None
        try:
            result = await self._run(cut_image, job)
        except (InvalidImage, RenderError):
            raise
        except Exception as exc:
            raise RenderError(f"cutting the metatile failed: {exc}") from exc
        finally:
            if result is None:  # failed: nothing to hand over
                self._firsts.pop(early, None)
        return self._tiles(result, early, first)

    async def _run(self, function: Any, job: J) -> RenderResult:
        """Runs function(job) in a render process; a dead process rebuilds the pool once."""
        for attempt in (1, 2):
            pool = self._pool
            if pool is None:
                raise RenderError("the render pool is closed")
            try:
                async with asyncio.timeout(self._timeout):
                    result: RenderResult | None = await pool.run_within(
                        self._timeout, function, job
                    )
                    if result is None:  # skipped: its deadline, that of this timeout, passed
                        raise TimeoutError
                    return result
            except BrokenProcessPool as exc:
                # A render process died (killed, out of memory): rebuild the pool once.
                self._rebuild(pool, str(exc))
                if attempt == 2:
                    raise RenderError(f"render process died: {exc}") from exc
                continue
            except TimeoutError as exc:
                raise RenderError(f"render took longer than {self._timeout:g} s") from exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, pool.close)
        if self._early is not None:
            self._early.close()
            self._early = None
