"""Mapnik rendering in a pool of worker processes (see mapnik_worker)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tileserver.adapters.mapnik_worker import (
    MapSpec,
    RenderJob,
    init_worker,
    load_errors,
    render_metatile,
)
from tileserver.config import Layer
from tileserver.errors import ConfigError, RenderError
from tileserver.grid import Metatile
from tileserver.types import TileCoord

log = logging.getLogger("tileserver.render")


class MapnikRenderer:
    """Renders metatiles of `type: mapnik` layers in `processes` worker processes."""

    def __init__(self, layers: Sequence[Layer], processes: int, timeout: float = 60.0) -> None:
        self._specs = tuple(
            MapSpec(layer.name, str(layer.mapfile), layer.grid.srs)
            for layer in layers
            if layer.type == "mapnik" and layer.mapfile is not None
        )
        self.processes = processes
        self._timeout = timeout
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs an event loop and threads.
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(self._specs,),
        )

    async def start(self) -> None:
        """Starts the pool and checks that every Mapnik file loads."""
        self._pool = self._new_pool()
        if not self._specs:
            return
        loop = asyncio.get_running_loop()
        errors = await loop.run_in_executor(self._pool, load_errors)
        if errors:
            await self.close()
            raise ConfigError(
                [f"layers.{name}.mapfile: Mapnik cannot load it: {e}" for name, e in errors.items()]
            )

    async def render(
        self, layer: Layer, metatile: Metatile, dimensions: Mapping[str, str]
    ) -> dict[TileCoord, bytes]:
        job = RenderJob(
            layer=layer.name,
            bbox=metatile.bbox.as_tuple(),
            width=metatile.width,
            height=metatile.height,
            tile_size=layer.grid.tile_size,
            tiles=tuple((t.coord.z, t.coord.row, t.coord.col, t.x, t.y) for t in metatile.tiles),
            image_format=layer.output_format,
            variables=tuple(sorted(dimensions.items())),
        )
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool
            if pool is None:
                raise RenderError("the render pool is closed")
            try:
                async with asyncio.timeout(self._timeout):
                    result = await loop.run_in_executor(pool, render_metatile, job)
            except BrokenProcessPool as exc:
                # A render process died (killed, out of memory): rebuild the pool once.
                log.error("render pool broken (%s): restarting it", exc)
                if self._pool is pool:
                    self._pool = self._new_pool()
                    pool.shutdown(wait=False, cancel_futures=True)
                if attempt == 2:
                    raise RenderError(f"render process died: {exc}") from exc
                continue
            except TimeoutError as exc:
                raise RenderError(f"render took longer than {self._timeout:g} s") from exc
            except Exception as exc:
                raise RenderError(f"Mapnik failed: {exc}") from exc
            log.debug(
                "mapnik %s: render %.0f ms, cut+encode %.0f ms",
                layer.name,
                result.render_seconds * 1000,
                result.encode_seconds * 1000,
            )
            return {TileCoord(*key): data for key, data in result.tiles.items()}
        raise AssertionError("unreachable")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: pool.shutdown(wait=True, cancel_futures=True)
            )
