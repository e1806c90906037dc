"""Tile-matrix math: tile <-> bbox, scale denominators, matrix sizes and limits, metatiles.

Pure functions over frozen dataclasses; no I/O. Conventions follow OGC WMTS 1.0.0
(07-057r7, 6.1): rows grow downwards from the top-left corner, the standardized
rendering pixel is 0.28 mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tileserver.types import BBox, Limits, TileCoord

PIXEL_SIZE_M = 0.00028
"""WMTS 'standardized rendering pixel size' in metres (07-057r7, 6.1.1)."""

# Tolerance, in tiles, for floating-point noise when a bbox edge falls on a tile edge.
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class Grid:
    """A tile matrix set: one CRS, a bbox whose top-left corner is the origin, resolutions."""

    name: str
    srs: str
    bbox: BBox
    resolutions: tuple[float, ...]
    tile_size: int = 256
    matrix_identifier: str = "zoom"  # or "resolution", as in TileCloud-chain
    meters_per_unit: float = 1.0
    yx_axis_order: bool = False  # True where the CRS lists northing/latitude first
    crs_urn: str = ""
    _ids: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for z in range(len(self.resolutions)):
            self._ids[self.matrix_id(z)] = z
            if self.matrix_identifier == "resolution":
                # tileserver < 0.2 wrote '2.5' where TileCloud-chain writes '2_5'.
                self._ids.setdefault(format_resolution(self.resolutions[z]), z)

    # --- identifiers -------------------------------------------------------------------

    def matrix_id(self, z: int) -> str:
        """The TileMatrix identifier of level z."""
        if self.matrix_identifier == "resolution":
            # TileCloud-chain's identifier: '2_5' for 2.5, '1' for 1.0 (its store paths and
            # its users' URLs use it).
            return format_resolution(self.resolutions[z]).replace(".", "_")
        return str(z)

    def zoom_of(self, matrix_id: str) -> int | None:
        """The level of a TileMatrix identifier, None when the grid has no such matrix."""
        return self._ids.get(matrix_id)

    # --- matrix geometry ---------------------------------------------------------------

    def tile_span(self, z: int) -> float:
        """Width (= height) of one tile of level z, in CRS units."""
        return self.resolutions[z] * self.tile_size

    def matrix_size(self, z: int) -> tuple[int, int]:
        """(MatrixWidth, MatrixHeight): tiles needed to cover the grid bbox at level z."""
        span = self.tile_span(z)
        width = max(1, math.ceil((self.bbox.maxx - self.bbox.minx) / span - _EPSILON))
        height = max(1, math.ceil((self.bbox.maxy - self.bbox.miny) / span - _EPSILON))
        return width, height

    def scale_denominator(self, z: int) -> float:
        """ScaleDenominator of level z with the 0.28 mm pixel."""
        return self.resolutions[z] * self.meters_per_unit / PIXEL_SIZE_M

    def tile_bbox(self, coord: TileCoord) -> BBox:
        span = self.tile_span(coord.z)
        minx = self.bbox.minx + coord.col * span
        maxy = self.bbox.maxy - coord.row * span
        return BBox(minx, maxy - span, minx + span, maxy)

    def contains(self, coord: TileCoord) -> bool:
        if not 0 <= coord.z < len(self.resolutions):
            return False
        width, height = self.matrix_size(coord.z)
        return 0 <= coord.row < height and 0 <= coord.col < width

    def limits(self, z: int, bbox: BBox | None = None) -> Limits:
        """Rows and columns of level z whose tiles intersect bbox (default: the whole matrix)."""
        width, height = self.matrix_size(z)
        if bbox is None:
            return Limits(0, height - 1, 0, width - 1)
        span = self.tile_span(z)
        min_col = math.floor((bbox.minx - self.bbox.minx) / span + _EPSILON)
        max_col = math.ceil((bbox.maxx - self.bbox.minx) / span - _EPSILON) - 1
        min_row = math.floor((self.bbox.maxy - bbox.maxy) / span + _EPSILON)
        max_row = math.ceil((self.bbox.maxy - bbox.miny) / span - _EPSILON) - 1
        return Limits(
            min_row=_clamp(min_row, 0, height - 1),
            max_row=_clamp(max_row, 0, height - 1),
            min_col=_clamp(min_col, 0, width - 1),
            max_col=_clamp(max_col, 0, width - 1),
        )

    def top_left_corner(self) -> tuple[float, float]:
        """TopLeftCorner in the CRS's own axis order (lat/lon for EPSG:4326)."""
        if self.yx_axis_order:
            return (self.bbox.maxy, self.bbox.minx)
        return (self.bbox.minx, self.bbox.maxy)


@dataclass(frozen=True, slots=True)
class CutTile:
    """Where one tile lies inside a rendered metatile image (pixel offset of its top-left)."""

    coord: TileCoord
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Metatile:
    """A block of meta_size x meta_size tiles rendered at once, plus a pixel buffer.

    The block is clipped at the matrix edge, and so is the buffer: nothing is
    rendered outside the grid's extent.
    """

    z: int
    row: int  # top row of the block
    col: int  # left column of the block
    rows: int
    cols: int
    bbox: BBox  # extent of the rendered image, buffer included
    width: int  # rendered image size in pixels, buffer included
    height: int
    tiles: tuple[CutTile, ...]


def metatile_for(grid: Grid, coord: TileCoord, meta_size: int, meta_buffer: int) -> Metatile:
    """The metatile holding coord (meta_size 1 gives a single tile with its buffer)."""
    width, height = grid.matrix_size(coord.z)
    row0 = coord.row - coord.row % meta_size
    col0 = coord.col - coord.col % meta_size
    rows = min(meta_size, height - row0)
    cols = min(meta_size, width - col0)
    ts = grid.tile_size
    res = grid.resolutions[coord.z]
    buf_left = meta_buffer if col0 > 0 else 0
    buf_top = meta_buffer if row0 > 0 else 0
    buf_right = meta_buffer if col0 + cols < width else 0
    buf_bottom = meta_buffer if row0 + rows < height else 0
    block = grid.tile_bbox(TileCoord(coord.z, row0, col0))
    minx = block.minx - buf_left * res
    maxy = block.maxy + buf_top * res
    maxx = block.minx + (cols * ts + buf_right) * res
    miny = block.maxy - (rows * ts + buf_bottom) * res
    tiles = tuple(
        CutTile(TileCoord(coord.z, row0 + r, col0 + c), buf_left + c * ts, buf_top + r * ts)
        for r in range(rows)
        for c in range(cols)
    )
    return Metatile(
        z=coord.z,
        row=row0,
        col=col0,
        rows=rows,
        cols=cols,
        bbox=BBox(minx, miny, maxx, maxy),
        width=cols * ts + buf_left + buf_right,
        height=rows * ts + buf_top + buf_bottom,
        tiles=tiles,
    )


# EPSG:3857's square world, and the codes that name that CRS (older and ESRI ones included).
WEB_MERCATOR_HALF_WORLD = 20037508.342789244
WEB_MERCATOR_SRS = frozenset({"EPSG:3857", "EPSG:900913", "EPSG:102100", "EPSG:102113"})


def web_mercator_zoom_offset(grid: Grid) -> int | None:
    """The Web Mercator zoom of the grid's level 0 when the grid is the Web Mercator
    quadtree (EPSG:3857, the world's square as its bbox, each level half the resolution
    of the one before): the tiling of MBTiles and PMTiles, whose `z/x/y` are its zooms.
    None for any other grid."""
    if grid.srs.upper() not in WEB_MERCATOR_SRS or not grid.resolutions:
        return None
    world = 2 * WEB_MERCATOR_HALF_WORLD
    bbox = grid.bbox.as_tuple()
    half = WEB_MERCATOR_HALF_WORLD
    if any(
        not math.isclose(a, b, rel_tol=1e-9)
        for a, b in zip(bbox, (-half, -half, half, half), strict=True)
    ):
        return None
    tiles = world / grid.tile_span(0)  # tiles across the world at level 0: 2 ** offset
    offset = round(math.log2(tiles)) if tiles >= 1 else -1
    if offset < 0:
        return None
    for z in range(len(grid.resolutions)):
        if not math.isclose(world / grid.tile_span(z), 2 ** (offset + z), rel_tol=1e-6):
            return None
    return offset


def format_resolution(resolution: float) -> str:
    """A number as the shortest text that reads back exactly, without a trailing '.0'
    (TileMatrix identifiers, and every number written in Capabilities)."""
    text = repr(float(resolution))
    return text[:-2] if text.endswith(".0") else text


def bbox_text(bbox: BBox) -> str:
    """A bbox as `minx,miny,maxx,maxy` in messages, each number as `format_resolution`."""
    return ",".join(format_resolution(v) for v in bbox.as_tuple())


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
