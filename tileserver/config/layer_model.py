"""The layers as the code uses them (frozen dataclasses built by `layers.py`): a layer on
its grid, its source, dimensions, geoms, empty tiles and cost, and the values a layer's
keys may take."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from tileserver.grid import Grid
from tileserver.types import BBox

# Names that appear in URLs and cache keys.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:+\-]+$")
_WMTS_PARAMETERS = {
    "service",
    "request",
    "version",
    "layer",
    "style",
    "format",
    "tilematrixset",
    "tilematrix",
    "tilerow",
    "tilecol",
    "i",
    "j",
    "infoformat",
}

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
# PNG at zlib level 1, like MapCache's "PNG" format (compression "fast"): the same pixels
# as level 6 for about 15 % more bytes, and half the encoding time, which is most of the
# cost of a metatile (benchmarks/RESULTS.md, "Where a cold metatile's time goes").
DEFAULT_OUTPUT_FORMAT = {"png": "png:z=1", "jpeg": "jpeg85", "jpg": "jpeg85"}
# REST extensions of GetFeatureInfo formats; others use their subtype's letters.
INFO_EXTENSIONS = {
    "text/html": "html",
    "text/plain": "txt",
    "text/xml": "xml",
    "application/xml": "xml",
    "application/vnd.ogc.gml": "gml",
    "application/vnd.ogc.gml/3.1.1": "gml3",
    "application/json": "json",
    "application/geo+json": "geojson",
}
LAYER_TYPES = ("mapnik", "wms")
FUTURE_LAYER_TYPES: tuple[str, ...] = ()
WMS_VERSIONS = ("1.1.1", "1.3.0")
DEFAULT_INFO_FORMATS = ("application/vnd.ogc.gml",)
MISSING_TILE = ("render", "no_content", "transparent")


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    values: tuple[str, ...]
    default: str
    generate: tuple[str, ...] = ()  # what generate_tiles renders; () = the default only

    @property
    def generated(self) -> tuple[str, ...]:
        return self.generate or (self.default,)


@dataclass(frozen=True, slots=True)
class EmptyTile:
    """An empty tile: recognised by its size in bytes and the SHA-1 of its bytes
    (TileCloud-chain's), and, with `color`, by its pixels: a tile all of that one colour
    whatever its bytes (see tileserver.uniform_tiles)."""

    size: int | None
    hash: str | None
    color: tuple[int, int, int, int] | None = None  # RGBA, straight alpha
    # Where `color` comes from when the file gives only size and hash: the uniform tile
    # that hash is of, e.g. "a transparent 256x256 tile, PNG, zlib level 6".
    identified: str = ""


@dataclass(frozen=True, slots=True)
class LayerGeom:
    """One entry of a layer's `geoms` (TileCloud-chain's): where a generation without an
    explicit area renders, at the levels whose resolution is within [min_resolution,
    max_resolution]. A GeoJSON or WKT `file`, or an `sql` select list run on PostGIS
    as `SELECT ST_AsBinary(geom) FROM (SELECT <sql>) AS g`; in the grid's CRS, read
    when a generation starts, not here."""

    file: Path | None = None
    sql: str | None = None
    connection: str = ""  # libpq connection string; "" = libpq's PG* environment variables
    min_resolution: float | None = None
    max_resolution: float | None = None

    def applies_to(self, resolution: float) -> bool:
        return (self.min_resolution is None or resolution >= self.min_resolution) and (
            self.max_resolution is None or resolution <= self.max_resolution
        )


@dataclass(frozen=True, slots=True)
class WmsSource:
    """Where a `type: wms` layer gets its images: one GetMap per metatile (with its
    buffer) and, for `query_layers`, GetFeatureInfo forwarded for a tile's pixel."""

    url: str
    layers: str  # the WMS LAYERS parameter, comma-separated
    version: str = "1.1.1"  # or 1.3.0 (axis order of the CRS, CRS= instead of SRS=)
    params: tuple[tuple[str, str], ...] = ()  # extra GetMap parameters (STYLES, TRANSPARENT...)
    headers: tuple[tuple[str, str], ...] = ()
    generate_salt: bool = False  # a random SALT parameter busts caches in front of the WMS
    timeout: float = 30.0  # seconds per upstream request
    retries: int = 2  # more attempts after a failed request, with exponential backoff
    query_layers: str = ""  # QUERY_LAYERS of GetFeatureInfo; "" = not queryable
    info_formats: tuple[str, ...] = ()  # GetFeatureInfo formats, advertised in Capabilities


@dataclass(frozen=True, slots=True)
class LayerCost:
    """A layer's own `cost` figures (TileCloud-chain's); None: the top-level one."""

    tileonly_generation_time: float | None = None
    tile_generation_time: float | None = None
    metatile_generation_time: float | None = None
    tile_size: float | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    type: str
    title: str
    grid: Grid
    bbox: BBox  # in the grid's CRS
    mapfile: Path | None
    meta: bool
    meta_size: int
    meta_buffer: int
    mime_type: str
    extension: str
    output_format: str  # the renderer's encoder name, e.g. Mapnik's 'png', 'png32', 'jpeg85'
    wmts_style: str
    dimensions: tuple[Dimension, ...]
    expires_hours: float
    min_resolution_seed: float | None
    cache: str | None
    abstract: str = ""
    missing_tile: str = "render"  # a pre-generated level's tile absent from the store
    empty_tile_detection: EmptyTile | None = None
    empty_metatile_detection: EmptyTile | None = None
    geoms: tuple[LayerGeom, ...] = ()  # limits generation; empty: the whole bbox
    wms: WmsSource | None = None  # type: wms only
    # type: mapnik: libpq connection string whose host, port, dbname, user, password and
    # connect_timeout replace those of every PostGIS datasource of the style; "" keeps
    # the style's (and libpq's PG* environment variables for what it leaves out).
    connection: str = ""
    # Every grid of the layer (TileCloud-chain's `grids: [...]`) and the layer's bbox on
    # each, in that grid's CRS; `grid` and `bbox` are those of this variant, see on_grid().
    grids: tuple[Grid, ...] = ()
    grid_bboxes: tuple[BBox, ...] = ()
    px_buffer: float = 0.0  # pixels added around `geoms` when selecting tiles to generate
    data_buffer: int | None = None  # mapnik: the style's buffer-size, in pixels
    cost: LayerCost | None = None  # overrides of the top-level `cost` figures
    # RFC 5861, opt-in (0: off): seconds past `expires` a cached tile is still answered, at
    # once while one background render refreshes it (stale_while_revalidate), or when its
    # render fails (stale_if_error).
    stale_while_revalidate: int = 0
    stale_if_error: int = 0

    def __post_init__(self) -> None:
        if not self.grids:
            object.__setattr__(self, "grids", (self.grid,))
        if len(self.grid_bboxes) != len(self.grids):
            bboxes = tuple(self.bbox if g.name == self.grid.name else g.bbox for g in self.grids)
            object.__setattr__(self, "grid_bboxes", bboxes)

    @property
    def grid_names(self) -> tuple[str, ...]:
        return tuple(grid.name for grid in self.grids)

    def on_grid(self, name: str) -> Layer | None:
        """This layer on its grid `name` (the same layer, another TileMatrixSet), or None
        when the layer has no such grid."""
        if name == self.grid.name:
            return self
        for grid, bbox in zip(self.grids, self.grid_bboxes, strict=True):
            if grid.name == name:
                return dataclasses.replace(self, grid=grid, bbox=bbox)
        return None

    def variants(self) -> tuple[Layer, ...]:
        """The layer on each of its grids, the first one first."""
        return tuple(v for g in self.grids if (v := self.on_grid(g.name)) is not None)

    @property
    def queryable(self) -> bool:
        return self.wms is not None and bool(self.wms.query_layers)

    @property
    def ttl_seconds(self) -> int:
        """Memcached TTL and HTTP max-age."""
        return max(1, round(self.expires_hours * 3600))

    @property
    def cache_ttl_seconds(self) -> int:
        """The tile cache's TTL: the expiry, and the longer stale window after it."""
        return self.ttl_seconds + max(self.stale_while_revalidate, self.stale_if_error)

    @property
    def effective_meta_size(self) -> int:
        return self.meta_size if self.meta else 1

    def is_on_demand(self, z: int) -> bool:
        """True where level z is rendered on demand: finer than min_resolution_seed, or
        any level of a layer without a tile store."""
        if self.min_resolution_seed is None or self.cache is None:
            return True
        return self.grid.resolutions[z] < self.min_resolution_seed


def info_extension(info_format: str) -> str:
    """The file extension of a GetFeatureInfo format in REST URLs."""
    known = INFO_EXTENSIONS.get(info_format.lower())
    if known is not None:
        return known
    subtype = info_format.split(";")[0].rsplit("/", 1)[-1].rsplit("+", 1)[-1]
    return re.sub(r"[^a-z0-9]", "", subtype.lower()) or "info"
