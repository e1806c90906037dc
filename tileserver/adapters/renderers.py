"""The renderer of a configuration: each layer's metatiles go to its type's renderer."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from tileserver.adapters.mapnik_renderer import MapnikRenderer
from tileserver.adapters.wms_renderer import WmsRenderer
from tileserver.config import Layer, UpstreamConfig
from tileserver.errors import OWSException
from tileserver.grid import Metatile
from tileserver.types import TileCoord


class LayerRenderer:
    """Mapnik layers render in the process pool; WMS layers are fetched by one GetMap
    per metatile and cut in that same pool, with the same encoders."""

    def __init__(
        self,
        layers: Sequence[Layer],
        processes: int,
        timeout: float = 60.0,
        upstream: UpstreamConfig | None = None,
    ) -> None:
        self.processes = processes
        self.mapnik = MapnikRenderer(layers, processes, timeout)
        has_wms = any(layer.type == "wms" for layer in layers)
        self.wms = WmsRenderer(self.mapnik, upstream) if has_wms else None

    async def start(self) -> None:
        await self.mapnik.start()
        if self.wms is not None:
            try:
                await self.wms.start()
            except BaseException:
                await self.mapnik.close()
                raise

    async def render(
        self,
        layer: Layer,
        metatile: Metatile,
        dimensions: Mapping[str, str],
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        if layer.type == "wms" and self.wms is not None:
            return await self.wms.render(layer, metatile, dimensions, only, first, on_first)
        return await self.mapnik.render(layer, metatile, dimensions, only, first, on_first)

    async def feature_info(
        self, layer: Layer, coord: TileCoord, i: int, j: int, info_format: str
    ) -> tuple[bytes, str]:
        if self.wms is None or not layer.queryable:
            raise OWSException(
                "OperationNotSupported",
                f"Layer {layer.name!r} is not queryable: GetFeatureInfo is not supported",
                "request",
                status=501,
            )
        return await self.wms.feature_info(layer, coord, i, j, info_format)

    async def check(self) -> tuple[str | None, dict[str, str]]:
        """See MapnikRenderer.check: the WMS layers need the pool too, to cut."""
        return await self.mapnik.check()

    async def close(self) -> None:
        try:
            if self.wms is not None:
                await self.wms.close()
        finally:
            await self.mapnik.close()
