"""WMTS GetCapabilities documents, rendered from a Mako template.

Two kinds: the server's own, rendered once per base URL (KVP and REST, tiles under
`{base}/wmts/1.0.0/`), and the static document of a tile store that `generate_controller`
writes into it (REST only, tiles in the store's layout under its public URL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mako.template import Template

from tileserver.config import CacheConfig, Config, Layer, info_extension
from tileserver.crs import bbox_to_wgs84
from tileserver.grid import Grid
from tileserver.grid import format_resolution as _num
from tileserver.store_layout import WMTS_VERSION
from tileserver.types import BBox, Limits


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a Capabilities document sends its clients (URLs without a trailing '/')."""

    capabilities_url: str  # the document itself (REST GetCapabilities, ServiceMetadataURL)
    tile_url: str  # the REST GetTile operation
    resource_bases: tuple[str, ...]  # a tile ResourceURL each: base + "/{layer}/{Style}/..."
    kvp_url: str | None  # None where there is no KVP endpoint (a static store)


def server_endpoints(base: str) -> Endpoints:
    """The server's own endpoints under base (the server's public URL)."""
    return Endpoints(
        capabilities_url=f"{base}/wmts/1.0.0/WMTSCapabilities.xml",
        tile_url=f"{base}/wmts/1.0.0/",
        resource_bases=(f"{base}/wmts/1.0.0",),
        kvp_url=f"{base}/wmts?",
    )


def store_endpoints(cache: CacheConfig) -> Endpoints:
    """A static store's endpoints: files under its public URLs, in TileCloud-chain's
    layout (`store_layout`); ValueError when the cache has no public URL."""
    urls = cache.public_urls
    if not urls:
        raise ValueError(f"cache {cache.name!r} has no http_url")
    return Endpoints(
        capabilities_url=f"{urls[0]}/{cache.wmtscapabilities_file}",
        tile_url=f"{urls[0]}/{WMTS_VERSION}/",
        resource_bases=tuple(f"{url}/{WMTS_VERSION}" for url in urls),
        kvp_url=None,
    )


def all_levels(layer: Layer) -> Iterable[int]:
    return range(len(layer.grid.resolutions))


def stored_levels(layer: Layer) -> Iterable[int]:
    """The levels `generate_tiles` writes by default (resolution >= min_resolution_seed);
    every level for a layer without min_resolution_seed (generated with --zoom)."""
    seed = layer.min_resolution_seed
    return [z for z, r in enumerate(layer.grid.resolutions) if seed is None or r >= seed]


def _corner(grid: Grid, x: float, y: float) -> str:
    return f"{_num(y)} {_num(x)}" if grid.yx_axis_order else f"{_num(x)} {_num(y)}"


def _wgs84_bbox(layer: Layer) -> BBox:
    return bbox_to_wgs84(layer.bbox, layer.grid.srs)


def _bounding_boxes(layer: Layer) -> list[Layer]:
    """The variants of the layer whose ows:BoundingBox is written: one per CRS."""
    found: dict[str, Layer] = {}
    for variant in layer.variants():
        found.setdefault(variant.grid.srs, variant)
    return list(found.values())


def _matrix_limits(layer: Layer, levels: Iterable[int]) -> list[tuple[str, Limits]]:
    """TileMatrixLimits of the layer's bbox, by TileMatrix identifier.

    The WMTS 1.0.0 schema types MaxTileRow and MaxTileCol as xs:positiveInteger, so limits
    whose last row or column is 0 cannot be written validly: such levels are left out
    (clients then see the layer from the first level it does not start in row or column 0).
    """
    found = []
    for z in levels:
        limits = layer.grid.limits(z, layer.bbox)
        if limits.max_row > 0 and limits.max_col > 0:
            found.append((layer.grid.matrix_id(z), limits))
    return found


@lru_cache(maxsize=1)
def _template() -> Template:
    text = resources.files("tileserver").joinpath("templates/capabilities.xml.mako").read_text()
    return Template(text, strict_undefined=True)


def render_capabilities(
    config: Config,
    layers: Sequence[Layer],
    endpoints: Endpoints,
    levels: Callable[[Layer], Iterable[int]] = all_levels,
) -> bytes:
    """The Capabilities of layers at endpoints, one TileMatrixSetLink per grid of a layer;
    each TileMatrixSetLimits lists `levels(variant)` (the layer on that grid)."""
    grids = {grid.name: grid for layer in layers for grid in layer.grids}
    text = _template().render(
        endpoints=endpoints,
        metadata=config.metadata,
        provider=config.provider,
        layers=list(layers),
        grids=list(grids.values()),
        matrix_limits=lambda variant: _matrix_limits(variant, levels(variant)),
        bounding_boxes=_bounding_boxes,
        num=_num,
        corner=_corner,
        wgs84_bbox=_wgs84_bbox,
        info_extension=info_extension,
    )
    return str(text).encode()


def store_capabilities(config: Config, layers: Sequence[Layer], cache: CacheConfig) -> bytes:
    """The static Capabilities of the layers' pre-generated tiles in cache, for clients that
    read the store directly at its public URL; ValueError when it has none."""
    return render_capabilities(config, layers, store_endpoints(cache), stored_levels)


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
            layers = list(self._config.layers.values())
            cached = render_capabilities(self._config, layers, server_endpoints(base))
            if len(self._documents) < 64:  # bounded: Host headers are client-supplied
                self._documents[base] = cached
        return cached
