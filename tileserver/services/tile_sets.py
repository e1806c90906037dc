"""What a generation renders of a layer: its tile sets, one per grid (TileCloud-chain's
`grids`) and combination of dimension values (each dimension's `generate` values, or the
one `--dimensions NAME=VALUE` gives), each a folder of its own in the store; and the
areas TileCloud-chain's `--near` and `--test` choose. Pure functions over the config.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tileserver.config import Layer
from tileserver.crs import transform_bbox
from tileserver.selection import MetatileRef
from tileserver.types import BBox


@dataclass(frozen=True)
class TileSet:
    """The layer on one grid (`layer.grid`) with one value of each dimension."""

    layer: Layer
    dimensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """'osm', 'osm (grid lv95)', 'osm (grid lv95, DATE=2012)': the parts that tell it
        from the layer's other tile sets."""
        layer = self.layer
        parts = [f"grid {layer.grid.name}"] if len(layer.grids) > 1 else []
        parts += [f"{name}={value}" for name, value in self.dimensions.items()]
        return f"{layer.name} ({', '.join(parts)})" if parts else layer.name


def tile_sets(
    layer: Layer, grid: str | None = None, dimensions: Mapping[str, str] | None = None
) -> list[TileSet]:
    """The layer's tile sets to render: on each of its grids (only `grid`, when given),
    with every combination of its dimensions' `generate` values (a dimension named in
    `dimensions` takes that value instead). ValueError naming what is wrong."""
    if grid is None:
        variants = list(layer.variants())
    else:
        variant = layer.on_grid(grid)
        if variant is None:
            raise ValueError(f"layer {layer.name!r} has no grid {grid!r} (its grids: "
                             f"{', '.join(layer.grid_names)})")  # fmt: skip
        variants = [variant]
    given = dict(dimensions or {})
    choices = []
    for dimension in layer.dimensions:
        value = given.get(dimension.name)
        if value is not None and value not in dimension.values:
            raise ValueError(
                f"{dimension.name}={value}: not a value of layer {layer.name!r}'s dimension "
                f"{dimension.name} ({', '.join(dimension.values)})"
            )
        choices.append([value] if value is not None else list(dimension.generated))
    names = [d.name for d in layer.dimensions]
    return [
        TileSet(variant, dict(zip(names, values, strict=True)))
        for variant in variants
        for values in itertools.product(*choices)
    ]


def in_first_grid(layer: Layer, bbox: BBox) -> BBox:
    """bbox (in the CRS of the layer's first grid, as a run's --bbox is) in the CRS of the
    grid of `layer` (a variant); ValueError where it has no extent there."""
    return transform_bbox(bbox, layer.grids[0].srs, layer.grid.srs)


def near_bbox(layer: Layer, x: float, y: float, z: int, tiles: int) -> BBox:
    """TileCloud-chain's --near X Y: the square of whole metatiles of level z, centred on
    the metatile holding (x, y), that holds about `tiles` tiles."""
    grid, meta_size = layer.grid, layer.effective_meta_size
    span = grid.tile_span(z) * meta_size
    side = max(1, math.ceil(math.sqrt(tiles / meta_size**2)))
    col = math.floor((x - grid.bbox.minx) / span) - (side - 1) // 2
    row = math.floor((grid.bbox.maxy - y) / span) - (side - 1) // 2
    minx, maxy = grid.bbox.minx + col * span, grid.bbox.maxy - row * span
    inset = grid.resolutions[z] / 2  # inside the square: its neighbours are not touched
    return BBox(minx + inset, maxy - side * span + inset, minx + side * span - inset, maxy - inset)


def first_tiles(
    metatiles: Sequence[MetatileRef], tiles_of: Mapping[MetatileRef, int], count: int
) -> list[MetatileRef]:
    """TileCloud-chain's --test N: the first metatiles of the run that hold N tiles."""
    chosen: list[MetatileRef] = []
    total = 0
    for ref in metatiles:
        if total >= count:
            break
        chosen.append(ref)
        total += tiles_of[ref]
    return chosen
