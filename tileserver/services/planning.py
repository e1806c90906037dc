"""What a generation covers: its layers, their tile sets (grids, dimension values), stores
and levels, and the metatiles of the selection (plan_selection.py: --bbox, --geom, --tiles,
--tile, --near) within each layer's bbox and `geoms` (level_areas.py); and the key that
names a run's state file.

The faces give the options as text (those of `generate_tiles`); what is wrong with them
raises `InvalidSelection` (a wrong value), `PlanningError` (a missing setting) or
`GeomsError` (a layer's `geoms` that cannot be read), whose messages name the option or
the configuration key at fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tileserver.config import Config, Layer
from tileserver.crs import transformer
from tileserver.errors import InvalidSelection, PlanningError
from tileserver.grid import Grid, bbox_text
from tileserver.selection import (
    MetatileRef,
    format_zooms,
    metatile_ref,
    metatiles_in_areas,
    named_layers,
    parse_tile,
    parse_zooms,
    seeded_zooms,
)
from tileserver.services.invalidation import clip_to_layer, reproject
from tileserver.services.level_areas import GeometryLoader, intersect_areas, layer_geometries
from tileserver.services.plan_selection import PlanOptions, Selection
from tileserver.services.tile_filters import (
    TileFilter,
    tiles_area,
    tiles_in_areas,
    tiles_in_bbox,
    unique_metatiles,
    wanted_tiles,
)
from tileserver.services.tile_sets import (
    TileSet,
    first_tiles,
    in_first_grid,
    near_bbox,
    tile_sets,
)
from tileserver.types import BBox, TileCoord

if TYPE_CHECKING:  # shapely is imported where a geometry is made: see `selection`
    from shapely.geometry.base import BaseGeometry


@dataclass
class LayerJob:
    """One layer's part of the run: its store, levels, metatiles and wanted tiles."""

    layer: Layer  # on the grid of the tile set
    cache: str
    zooms: tuple[int, ...]
    metatiles: list[MetatileRef]
    wanted: TileFilter
    tiles: int | None = None  # wanted tiles, counted on demand (see `count_tiles`)
    dimensions: dict[str, str] = field(default_factory=dict)  # the tile set's values

    @property
    def label(self) -> str:
        return TileSet(self.layer, self.dimensions).label

    def count_tiles(self) -> int:
        if self.tiles is None:
            self.tiles = sum(len(wanted_tiles(self.layer, r, self.wanted)) for r in self.metatiles)
        return self.tiles


def _bbox_intersection(a: BBox, b: BBox) -> BBox | None:
    if not a.intersects(b):
        return None
    return BBox(max(a.minx, b.minx), max(a.miny, b.miny), min(a.maxx, b.maxx), min(a.maxy, b.maxy))


class Planner:
    """Plans the jobs of one run over a loaded configuration; `info` and `warn` receive
    what is worth telling (the layers' `geoms` read, an empty query)."""

    def __init__(
        self,
        config: Config,
        options: PlanOptions,
        load_geometry: GeometryLoader,
        info: Callable[[str], None],
        warn: Callable[[str], None],
    ) -> None:
        self.config = config
        self.options = options
        self.load_geometry = load_geometry
        self.info = info
        self.warn = warn

    def layers(self) -> list[Layer]:
        config = self.config
        return named_layers(
            config.layers, self.options.layers or (), config.generation.default_layers, "generate"
        )

    def one_layer(self, option: str) -> Layer:
        """The one layer of --layer, on --grid (default: its first grid)."""
        layers = self.layers()
        if len(layers) != 1:
            names = ", ".join(layer.name for layer in layers)
            raise InvalidSelection(f"{option} works on one layer: pass --layer (one of {names})")
        return self.tile_sets(layers[0])[0].layer

    def tile_sets(self, layer: Layer) -> list[TileSet]:
        """What the run renders of layer: each grid (or --grid) and each combination of its
        dimensions' `generate` values (or --dimensions)."""
        given = self.options.dimension_values
        unknown = set(given) - {d.name for layer in self.layers() for d in layer.dimensions}
        if unknown:
            raise InvalidSelection(f"--dimensions: no layer has a dimension {sorted(unknown)[0]}")
        try:
            return tile_sets(layer, self.options.grid, given)
        except ValueError as exc:
            option = "--grid" if "no grid" in str(exc) else "--dimensions"
            raise InvalidSelection(f"{option}: {exc}") from None

    def cache_of(self, layer: Layer) -> str:
        name: str | None = self.options.cache or layer.cache
        if name is None:
            raise PlanningError(
                f"layer {layer.name!r} has no tile store: pass --cache NAME, or set "
                f"layers.{layer.name}.cache or generation.default_cache "
                f"(caches: {', '.join(self.config.caches) or 'none'})"
            )
        if name not in self.config.caches:
            defined = ", ".join(self.config.caches) or "none"
            raise InvalidSelection(f"--cache: unknown cache {name!r} (defined: {defined})")
        return name

    def zoom_option(self, layer: Layer) -> tuple[int, ...]:
        """The levels of --zoom (given) in the layer's grid."""
        spec = self.options.zoom
        assert spec is not None  # the callers' check
        try:
            return parse_zooms(spec, len(layer.grid.resolutions))
        except ValueError as exc:
            raise InvalidSelection(f"--zoom {spec!r}: {exc}") from None

    def zooms_of(self, layer: Layer, selection: Selection) -> tuple[int, ...]:
        if self.options.zoom is not None:
            return self.zoom_option(layer)
        if selection.tiles is not None:
            return tuple(sorted({t.z for t in selection.tiles}))
        try:
            return seeded_zooms(layer, "generate")
        except ValueError as exc:
            raise PlanningError(str(exc)) from None

    def update_zooms(self, layer: Layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(pre-generated, on-demand) levels of an --update: every level, or those of --zoom."""
        if self.options.zoom is None:
            chosen: Sequence[int] = range(len(layer.grid.resolutions))
        else:
            chosen = self.zoom_option(layer)
        stored = tuple(z for z in chosen if not layer.is_on_demand(z))
        return stored, tuple(z for z in chosen if layer.is_on_demand(z))

    def tile_arg(self, layer: Layer, option: str, text: str) -> TileCoord:
        try:
            coord = parse_tile(text)
        except ValueError as exc:
            raise InvalidSelection(f"{option}: {exc}") from None
        if not layer.grid.contains(coord):
            raise InvalidSelection(
                f"{option} {text}: no such tile in grid {layer.grid.name!r} "
                f"(levels 0 to {len(layer.grid.resolutions) - 1})"
            )
        return coord

    def check_tiles_in_grid(self, grid: Grid, tiles: Iterable[TileCoord]) -> None:
        """InvalidSelection naming the first --tiles tile outside the grid."""
        outside = [t for t in tiles if not grid.contains(t)]
        if outside:
            raise InvalidSelection(
                f"--tiles {self.options.tiles}: tile {outside[0].z}/{outside[0].col}/"
                f"{outside[0].row} is outside grid {grid.name!r}"
            )

    def job(
        self,
        layer: Layer,
        selection: Selection,
        cache: str,
        zooms: tuple[int, ...] | None = None,
        *,
        layer_geoms: bool = True,
    ) -> LayerJob:
        """The metatiles and tiles of the selection in the layer's bbox; with `layer_geoms`,
        an area (no selection, --bbox or --geom) is also limited by the layer's `geoms`,
        read here. A tile list is not: it names its metatiles already."""
        grid, meta_size = layer.grid, layer.effective_meta_size
        if zooms is None:
            zooms = self.zooms_of(layer, selection)
        selection = self.on_grid(layer, selection, zooms)
        layer_geoms = layer_geoms and self.options.geom_filter and selection.near is None
        bbox = layer.bbox
        if selection.bbox is not None:
            clipped = _bbox_intersection(selection.bbox, layer.bbox)
            if clipped is None:
                raise InvalidSelection(
                    f"--bbox {bbox_text(selection.bbox)} does not intersect layer "
                    f"{layer.name!r}'s bbox {bbox_text(layer.bbox)} ({grid.srs})"
                )
            bbox = clipped
        if selection.tiles is not None:
            self.check_tiles_in_grid(grid, selection.tiles)
            chosen = {metatile_ref(t, meta_size) for t in selection.tiles if t.z in zooms}
            in_bbox = tiles_in_bbox(grid, bbox)

            def in_chosen(coord: TileCoord) -> bool:
                return in_bbox(coord) and metatile_ref(coord, meta_size) in chosen

            metatiles = [
                r
                for r in unique_metatiles(chosen)
                if any(in_chosen(t) for t in wanted_tiles(layer, r, None))
            ]
            return LayerJob(layer, cache, zooms, metatiles, in_chosen)
        if selection.geometry is not None:
            minx, miny, maxx, maxy = selection.geometry.bounds
            if not (
                minx <= bbox.maxx and bbox.minx <= maxx and miny <= bbox.maxy and bbox.miny <= maxy
            ):
                raise InvalidSelection(
                    f"--geom {self.options.geom}: the geometry does not reach layer "
                    f"{layer.name!r}'s bbox {bbox_text(bbox)}: its coordinates must be in "
                    f"the grid's CRS, {grid.srs}"
                )
        # The area of each level: the layer's geoms there, intersected with --geom.
        areas = (
            layer_geometries(layer, zooms, self.load_geometry, self.info, self.warn)
            if layer_geoms
            else {}
        )
        if selection.geometry is not None:
            areas = intersect_areas(areas, selection.geometry, zooms)
        metatiles = metatiles_in_areas(grid, zooms, areas, meta_size, bbox)
        return LayerJob(layer, cache, zooms, metatiles, tiles_in_areas(grid, areas, bbox))

    def on_grid(self, layer: Layer, selection: Selection, zooms: Sequence[int]) -> Selection:
        """The selection in the CRS of layer's grid: --bbox and --geom are in its first
        grid's (or --grid's), --tiles name tiles of one grid, --near picks a bbox."""
        if selection.near is not None:
            test = self.options.test
            if test is None or len(zooms) != 1:
                raise InvalidSelection("--near goes with --test N and one --zoom level")
            x, y = selection.near
            if self.options.grid is None and layer.grid.name != layer.grids[0].name:
                x, y = transformer(layer.grids[0].srs, layer.grid.srs).transform(x, y)
            bbox = near_bbox(layer, x, y, zooms[0], test)
            return dataclasses.replace(selection, bbox=bbox)
        if selection.grid == layer.grid.name:
            return selection  # in its CRS already
        if self.options.grid is not None or layer.grid.name == layer.grids[0].name:
            return selection
        if selection.tiles is not None:
            raise InvalidSelection(
                f"--tiles names tiles of one grid, and layer {layer.name!r} has several: "
                f"pass --grid (one of {', '.join(layer.grid_names)})"
            )
        source, here = layer.grids[0].srs, layer.grid.name
        if selection.geometry is not None:
            geometry = reproject(selection.geometry, source, layer.grid.srs)
            return dataclasses.replace(selection, geometry=geometry, grid=here)
        if selection.bbox is not None:
            try:
                bbox = in_first_grid(layer, selection.bbox)
            except ValueError as exc:
                raise InvalidSelection(f"--bbox: on grid {here!r}: {exc}") from None
            return dataclasses.replace(selection, bbox=bbox, grid=here)
        return selection

    def jobs(self, selection: Selection, *, layer_geoms: bool = True) -> list[LayerJob]:
        """A job per tile set of each layer (grid, dimension values), --test's first tiles."""
        jobs = []
        for layer in self.layers():
            for tile_set in self.tile_sets(layer):
                job = self.job(
                    tile_set.layer, selection, self.cache_of(layer), layer_geoms=layer_geoms
                )
                job.dimensions = dict(tile_set.dimensions)
                jobs.append(job)
        if self.options.test is not None:
            left = self.options.test
            for job in jobs:
                counts = {r: len(wanted_tiles(job.layer, r, job.wanted)) for r in job.metatiles}
                job.metatiles = first_tiles(job.metatiles, counts, left)
                job.tiles = None
                left = max(0, left - sum(counts[r] for r in job.metatiles))
        return jobs

    def update_area(self, layer: Layer, selection: Selection) -> tuple[Selection, BaseGeometry]:
        """The selection as the generation takes it (a tile list becomes the area of its
        tiles) and the area to invalidate, within the layer's bbox."""
        grid = layer.grid
        if selection.tiles is not None:
            self.check_tiles_in_grid(grid, selection.tiles)
            selection = Selection(
                geometry=tiles_area(grid, selection.tiles), key=selection.key, grid=grid.name
            )
        if selection.bbox is not None:
            from shapely import box

            area = clip_to_layer(layer, box(*selection.bbox.as_tuple()))
        else:
            assert selection.geometry is not None  # an explicit selection
            area = clip_to_layer(layer, selection.geometry)
        if area.is_empty:
            if self.options.bbox is not None:
                what = f"--bbox {self.options.bbox}"
            elif self.options.geom is not None:
                what = f"--geom {self.options.geom}: the geometry"
            else:
                what = f"--tiles {self.options.tiles}: the tiles"
            raise InvalidSelection(
                f"{what} does not reach layer {layer.name!r}'s bbox {bbox_text(layer.bbox)}: "
                f"coordinates must be in the grid's CRS, {grid.srs}"
            )
        return selection, area

    def state_key(self, jobs: Sequence[LayerJob], selection: Selection) -> str:
        """What identifies a run's metatiles: the same for the same layers, stores,
        levels and selection (the name of the run's state file)."""
        digest = hashlib.sha1()
        for job in jobs:
            layer = job.layer
            defaults = {d.name: d.default for d in layer.dimensions} | job.dimensions
            dims = ",".join(f"{name}={value}" for name, value in defaults.items())
            grid = f" {layer.grid.name}" if layer.grid.name != layer.grids[0].name else ""
            test = f" test {self.options.test}" if self.options.test is not None else ""
            digest.update(
                f"{layer.name}{grid} {job.cache} {layer.effective_meta_size} {dims} "
                f"{format_zooms(job.zooms)}{test}\n".encode()
            )
        digest.update(selection.key.encode())
        return digest.hexdigest()[:12]
