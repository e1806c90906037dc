"""Small value objects shared by every layer of the package."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BBox:
    """An axis-aligned box in a CRS's easting/northing (x/y) order."""

    minx: float
    miny: float
    maxx: float
    maxy: float

    def __post_init__(self) -> None:
        if not (self.minx < self.maxx and self.miny < self.maxy):
            raise ValueError(f"empty or inverted bbox {self.as_tuple()}")

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.minx, self.miny, self.maxx, self.maxy)

    def intersects(self, other: BBox) -> bool:
        return (
            self.minx < other.maxx
            and other.minx < self.maxx
            and self.miny < other.maxy
            and other.miny < self.maxy
        )


@dataclass(frozen=True, slots=True, order=True)
class TileCoord:
    """A tile of a tile matrix: zoom index, row (from the top) and column (from the left)."""

    z: int
    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.z}/{self.row}/{self.col}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Inclusive row/column range of a tile matrix (a WMTS TileMatrixLimits)."""

    min_row: int
    max_row: int
    min_col: int
    max_col: int

    def contains(self, row: int, col: int) -> bool:
        return self.min_row <= row <= self.max_row and self.min_col <= col <= self.max_col


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A value read from a tile cache, with the Unix time (whole seconds) it was made: a
    tile's render time, 0 when unknown (written by an older version or another program)."""

    value: bytes
    stamp: int = 0
    source: str = ""  # the cache that answered it: its `name` ("memcached", "memory")
    etag: str = ""  # the tile's HTTP validator, when the cache keeps it (the hot tier)


@dataclass(frozen=True, slots=True)
class Tile:
    """A tile as the tile service answers it, with where it came from and its times."""

    data: bytes | None  # None: no content (a missing pre-generated tile, missing_tile: no_content)
    source: str  # memcached | memory | render | coalesced | store | missing | hot | stale
    # Unix time the tile's metatile was rendered; None when unknown (pre-generated tiles,
    # cache entries written by older versions).
    rendered_at: float | None = None
    etag: str = ""  # its HTTP validator, when known ("": the HTTP face computes it)
    # Unix time a pre-generated tile was written to its store, as the store tells it. Apart
    # from rendered_at, which dates freshness (stale windows); a store's tiles have none.
    stored_at: float | None = field(default=None, kw_only=True)

    @property
    def modified(self) -> float | None:
        """When the tile's bytes were made (rendered or stored): its Last-Modified; None
        when unknown."""
        return self.rendered_at if self.rendered_at is not None else self.stored_at


@dataclass(frozen=True, slots=True)
class StoredTile:
    """A tile read from a store, with the Unix time it was stored (its HTTP Last-Modified);
    None when the store cannot tell."""

    data: bytes
    modified: float | None


class RenderedTiles(dict[TileCoord, bytes]):
    """A render's encoded tiles, and `uniform`: the colour (RGBA, straight alpha) of those
    all of one colour, as the render saw their pixels (empty-tile detection by colour,
    whatever bytes the encoder writes)."""

    def __init__(
        self,
        tiles: Mapping[TileCoord, bytes] | None = None,
        uniform: Mapping[TileCoord, tuple[int, int, int, int]] | None = None,
    ) -> None:
        super().__init__(tiles or {})
        self.uniform: dict[TileCoord, tuple[int, int, int, int]] = dict(uniform or {})
