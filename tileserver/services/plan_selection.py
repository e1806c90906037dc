"""What a generation is asked to cover, as the faces give it: the options as text
(`PlanOptions`, those of `generate_tiles`) and the area they select (`Selection`: --bbox,
--geom, --tiles, --tile or --near), its files read; a wrong value raises
`InvalidSelection`, whose message names the option. The planner (planning.py) turns it
into each layer's metatiles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tileserver.errors import InvalidSelection
from tileserver.selection import parse_geometry, parse_tile, read_tile_list
from tileserver.types import BBox, TileCoord

if TYPE_CHECKING:  # shapely is imported where a geometry is made: see `selection`
    from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """What was asked for, as given (`generate_tiles`' options of the same names)."""

    layers: Sequence[str] | None = None  # default: generation.default_layers
    cache: str | None = None  # default: each layer's
    zoom: str | None = None  # "5", "2-8", "2,4,7"
    bbox: str | None = None
    geom: str | None = None  # a file
    tiles: str | None = None  # a file
    tile: str | None = None  # "z/x/y": its metatile
    near: tuple[float, float] | None = None  # TileCloud-chain's --near X Y
    grid: str | None = None  # only this grid of the layers
    test: int | None = None  # the first N tiles only
    geom_filter: bool = True  # False: the layers' `geoms` do not limit the run
    dimension_values: Mapping[str, str] = field(default_factory=dict)  # --dimensions


@dataclass
class Selection:
    """--bbox, --geom or --tiles, read once for every layer; `key` identifies it for the
    state file's name."""

    bbox: BBox | None = None
    geometry: BaseGeometry | None = None
    tiles: list[TileCoord] | None = None
    key: str = ""
    near: tuple[float, float] | None = None  # TileCloud-chain's --near X Y
    grid: str | None = None  # the grid whose CRS it is in; None: the layers' first grid's

    @property
    def explicit(self) -> bool:
        return self.bbox is not None or self.geometry is not None or self.tiles is not None


def parse_bbox(text: str) -> BBox:
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 4:
            raise ValueError(f"expected 4 numbers, got {len(parts)}")
        return BBox(*(float(p) for p in parts))
    except ValueError as exc:
        raise InvalidSelection(f"--bbox {text!r}: {exc} (minx,miny,maxx,maxy)") from None


def read_geometry(path: str) -> tuple[BaseGeometry, bytes]:
    """A GeoJSON (geometry, Feature or FeatureCollection) or WKT file; and its bytes."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidSelection(f"--geom {path}: cannot read it: {exc.strerror}") from None
    try:
        return parse_geometry(raw), raw
    except ValueError as exc:
        raise InvalidSelection(f"--geom {path}: {exc}") from None


def read_selection(options: PlanOptions, error_file: str) -> Selection:
    """The selection of the options, --geom and --tiles files read."""
    given = [f"--{name}" for name in ("bbox", "geom", "tiles", "tile", "near")
             if getattr(options, name) is not None]  # fmt: skip
    if len(given) > 1:
        raise InvalidSelection(f"{' and '.join(given)} cannot be combined: give one area")
    if options.near is not None:
        x, y = options.near
        return Selection(near=(x, y), key=f"near {x!r},{y!r} {options.test}")
    if options.tile is not None:
        try:
            tile = parse_tile(options.tile)
        except ValueError as exc:
            raise InvalidSelection(f"--tile: {exc}") from None
        return Selection(tiles=[tile], key=f"tile {options.tile}")
    if options.bbox is not None:
        bbox = parse_bbox(options.bbox)
        return Selection(bbox=bbox, key="bbox " + ",".join(map(repr, bbox.as_tuple())))
    if options.geom is not None:
        geometry, raw = read_geometry(options.geom)
        return Selection(geometry=geometry, key="geom " + hashlib.sha1(raw).hexdigest())
    if options.tiles is not None:
        if Path(options.tiles).resolve() == Path(error_file).resolve():
            raise InvalidSelection(
                f"--tiles {options.tiles} is also the error file, which this run appends to: "
                f"move it aside first (mv {options.tiles} {options.tiles}.retry)"
            )
        try:
            raw = Path(options.tiles).read_bytes()
            tiles = read_tile_list(raw.decode("utf-8").splitlines())
        except OSError as exc:
            raise InvalidSelection(
                f"--tiles {options.tiles}: cannot read it: {exc.strerror}"
            ) from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise InvalidSelection(f"--tiles {options.tiles}: {exc}") from None
        return Selection(tiles=tiles, key="tiles " + hashlib.sha1(raw).hexdigest())
    return Selection()
