"""`generate_tiles` over a WMS without render processes: the GetMap answers cut in threads
of the command's own process.

Cutting a MapServer answer into PNG tiles is ISA-L's inflate of its rows and ISA-L's
deflate of each tile (`pillow_cut`, `png_decoder`, `png_encoder`); both release the GIL,
so a few threads cut side by side while the event loop reads the next answers. A run then
starts no process: no interpreter started and importing again per render process, no
resource tracker, no answer pickled across a pipe (figures: benchmarks/RESULTS.md, issue
15, phase 5). Only layers whose tiles `pillow_cut` encodes qualify (`cuts_in_threads`);
those that need Mapnik, to render or to encode, keep the render processes
(`renderers.LayerRenderer`), where Mapnik runs one job at a time.

Pillow and ISA-L (12-25 ms of CPU to import) are loaded by the cutting threads when
they start, while the first GetMaps are in flight, not before them (`tile_encodings`
decides without them; benchmarks/RESULTS.md, issue 15, phase 7).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from tileserver.adapters import tile_encodings
from tileserver.adapters.wms_renderer import WmsRenderer
from tileserver.config import Layer, UpstreamConfig
from tileserver.errors import OWSException, RenderError
from tileserver.grid import Metatile
from tileserver.types import RenderedTiles, TileCoord

_CUTTER = "tileserver.adapters.pillow_cut"  # Pillow, ISA-L: loaded by the cutting threads


def cuts_in_threads(layers: Sequence[Layer]) -> bool:
    """True when every layer is a WMS layer whose tiles `pillow_cut` encodes."""
    return bool(layers) and all(
        layer.type == "wms" and tile_encodings.options(layer.output_format) is not None
        for layer in layers
    )


class ThreadCutter:
    """Cuts WMS answers into encoded tiles in `threads` threads of this process."""

    def __init__(self, threads: int) -> None:
        self._threads = max(1, threads)
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="tileserver-cut")
        # Loaded by a cutting thread while the event loop sends the first GetMaps; `cut`
        # imports it again (waiting for this import, or raising its error).
        self._executor.submit(importlib.import_module, _CUTTER)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    async def cut(
        self,
        layer: Layer,
        metatile: Metatile,
        image: bytes,
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        """As `MapnikRenderer.cut`: raises a ValueError (pillow_cut.NotAnImage) when image
        is not an image of the metatile's size, RenderError on any other failure."""
        executor = self._executor
        if executor is None:
            raise RenderError("the cutting threads are not started")
        from tileserver.adapters import pillow_cut

        encoding = pillow_cut.options(layer.output_format)
        if encoding is None:
            raise RenderError(f"layer {layer.name!r}: its {layer.output_format} tiles need Mapnik")
        loop = asyncio.get_running_loop()
        first_done: pillow_cut.FirstDone | None = None
        if first is not None and on_first is not None:
            hand_over = on_first

            def first_done(data: bytes) -> None:  # in the cutting thread
                loop.call_soon_threadsafe(hand_over, data)

        uniform: pillow_cut.Uniform = {}
        cuts = pillow_cut.metatile_cuts(metatile, only, first if first_done else None)
        try:
            tiles = await loop.run_in_executor(
                executor, pillow_cut.cut, image, metatile.width, metatile.height, cuts,
                layer.grid.tile_size, encoding, uniform, first_done,
            )  # fmt: skip
        except pillow_cut.NotAnImage:
            raise
        except Exception as exc:
            raise RenderError(f"cutting the metatile failed: {exc}") from exc
        return RenderedTiles(
            {TileCoord(*key): data for key, data in tiles.items()},
            {TileCoord(*key): colour for key, colour in uniform.items()},
        )


class ThreadedWmsRenderer:
    """The renderer of WMS layers that `cuts_in_threads` accepts: one GetMap per metatile,
    its answer cut in `threads` threads (a RenderPool with no process to start).

    At most `threads` GetMaps run at once (fewer if `upstream.connections_per_host` says
    so), as many as TileCloud-chain's processes or `mapcache_seed -n` would send; the
    metatile generate_tiles has in flight beyond them waits for a connection, and its
    GetMap goes as soon as another answer is read, while that one is cut and written."""

    def __init__(self, threads: int, upstream: UpstreamConfig | None = None) -> None:
        self._cutter = ThreadCutter(threads)
        upstream = upstream or UpstreamConfig()
        getmaps = min(upstream.connections_per_host, max(1, threads))
        self._wms = WmsRenderer(self._cutter, replace(upstream, connections_per_host=getmaps))

    async def start(self) -> None:
        self._cutter.start()
        await self._wms.start()

    async def render(
        self,
        layer: Layer,
        metatile: Metatile,
        dimensions: Mapping[str, str],
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        return await self._wms.render(layer, metatile, dimensions, only, first, on_first)

    async def feature_info(
        self, layer: Layer, coord: TileCoord, i: int, j: int, info_format: str
    ) -> tuple[bytes, str]:
        if not layer.queryable:
            raise OWSException(
                "OperationNotSupported",
                f"Layer {layer.name!r} is not queryable: GetFeatureInfo is not supported",
                "request",
                status=501,
            )
        return await self._wms.feature_info(layer, coord, i, j, info_format)

    async def check(self) -> tuple[str | None, dict[str, str]]:
        return None, {}

    async def close(self) -> None:
        try:
            await self._wms.close()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._cutter.close)
