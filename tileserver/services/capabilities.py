"""WMTS GetCapabilities documents, rendered from a Mako template once per base URL."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from mako.template import Template

from tileserver.config import Config, Layer
from tileserver.crs import bbox_to_wgs84
from tileserver.grid import Grid
from tileserver.grid import format_resolution as _num
from tileserver.types import BBox


def _corner(grid: Grid, x: float, y: float) -> str:
    return f"{_num(y)} {_num(x)}" if grid.yx_axis_order else f"{_num(x)} {_num(y)}"


def _wgs84_bbox(layer: Layer) -> BBox:
    return bbox_to_wgs84(layer.bbox, layer.grid.srs)


@lru_cache(maxsize=1)
def _template() -> Template:
    text = resources.files("tileserver").joinpath("templates/capabilities.xml.mako").read_text()
    return Template(text, strict_undefined=True)


class CapabilitiesService:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._documents: dict[str, bytes] = {}

    def document(self, base_url: str) -> bytes:
        """The Capabilities for clients that reach the server at base_url (no trailing /)."""
        base = self._config.server.url or base_url
        base = base.rstrip("/")
        cached = self._documents.get(base)
        if cached is None:
            cached = self._render(base)
            if len(self._documents) < 64:  # bounded: Host headers are client-supplied
                self._documents[base] = cached
        return cached

    def _render(self, base: str) -> bytes:
        config = self._config
        grids = {layer.grid.name: layer.grid for layer in config.layers.values()}
        text = _template().render(
            base=base,
            metadata=config.metadata,
            provider=config.provider,
            layers=list(config.layers.values()),
            grids=list(grids.values()),
            num=_num,
            corner=_corner,
            wgs84_bbox=_wgs84_bbox,
        )
        return str(text).encode()
