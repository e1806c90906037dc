"""The `generate_tiles` command (also `tileserver generate`): pre-generates the coarse
levels of layers into their tile stores, TileCloud-chain's command of the same name.

    generate_tiles --config tileserver.yaml --layer roads --zoom 0-12
    generate_tiles --config tileserver.yaml --layer roads --get-hash 12/2140/1443
    generate_tiles --config tileserver.yaml --layer roads --geom changed.geojson --update

A run records each finished metatile in a state file; interrupted (Ctrl-C, or killed),
the same command run again resumes where it stopped.

After a data update, --update regenerates the pre-generated levels inside the area, then
deletes from Memcached the tiles of the on-demand levels there.

A layer's `geoms` (files, or PostGIS queries run when the command starts) limit every run
but a --tiles list to the metatiles that intersect them, level by level; --geom and
--bbox are intersected with them.

Across many machines, --role master puts the selection's metatiles in the queue of the
`redis` or `sqs` section, and --role worker on every host renders them
(services/distributed.py).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import shapely
from shapely.geometry.base import BaseGeometry

from tileserver.cli import tcc_options
from tileserver.cli.common import (
    CommandError,
    empty_tile_warnings,
    print_config_errors,
    print_config_warnings,
)
from tileserver.config import Config, EmptyTile, Layer
from tileserver.config_loader import load_config
from tileserver.crs import transformer
from tileserver.empty_tiles import colour_count, detection_yaml, is_stored_empty, signature
from tileserver.errors import (
    CacheUnavailable,
    ConfigError,
    GeomsError,
    QueueUnavailable,
    TileServerError,
)
from tileserver.grid import Grid, format_resolution
from tileserver.jobs import QueueCounts, encode_job
from tileserver.protocols import JobQueue, TileStore
from tileserver.selection import (
    MetatileRef,
    format_zooms,
    level_geometries,
    metatile_bbox,
    metatile_ref,
    metatiles_in_areas,
    parse_geometry,
    parse_tile,
    parse_zooms,
    read_tile_list,
)
from tileserver.services.distributed import Worker, WorkerStats, layer_jobs, wait_until_empty
from tileserver.services.generation import (
    GenerationStats,
    MetatileOutcome,
    TileFilter,
    TileGenerator,
    metatile_of,
    tile_line,
    tiles_area,
    tiles_in_areas,
    tiles_in_bbox,
    unique_metatiles,
    wanted_tiles,
)
from tileserver.services.invalidation import (
    Invalidation,
    InvalidationStats,
    clip_to_layer,
    delete_keys,
    reproject,
)
from tileserver.services.tile_sets import (
    TileSet,
    first_tiles,
    in_first_grid,
    near_bbox,
    tile_sets,
)
from tileserver.store_layout import parse_tile_path, tile_prefix
from tileserver.types import BBox, RenderedTiles, TileCoord

log = logging.getLogger("tileserver.generate")

ERROR_FILE = "generate_tiles-errors.txt"
PLAIN_PROGRESS_EVERY = 5.0  # seconds between two progress lines when not on a terminal
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
_DELETE_BATCH = 64  # tiles read at once by --delete-empty
MAX_INVALIDATE = 5_000_000  # default of --max-invalidate
ROLES = ("local", "master", "worker", "slave")  # --role; slave is TileCloud-chain's worker
WORKER_WAIT = 2.0  # seconds a worker waits for a job before it looks whether the queue is done
DAEMON_WAIT = 20.0  # the same for --daemon (SQS's longest poll: fewer requests)


# --- the command line ----------------------------------------------------------------------


def write_metrics_file(path: str, by_layer: Mapping[str, GenerationStats]) -> None:
    """The counters of a run by layer, in Prometheus' text format (written atomically)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    gauges: dict[str, tuple[str, Callable[[GenerationStats], float]]] = {
        "tiles_generated": ("Tiles written to the store", lambda s: s.tiles_written),
        "empty_tiles_dropped": ("Empty tiles not stored", lambda s: s.empty_dropped),
        "metatiles_done": ("Metatiles rendered", lambda s: s.done),
        "metatiles_failed": ("Metatiles that failed", lambda s: s.failed),
        "generation_seconds": ("Duration of the run", lambda s: s.elapsed),
    }
    for name, (text, read) in gauges.items():
        gauge = Gauge(f"tileserver_{name}", text, ["layer"], registry=registry)
        for layer, stats in by_layer.items():
            gauge.labels(layer).set(read(stats))
    write_to_textfile(path, registry)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config",
        help="YAML file, or a Mako template (*.mako) (default: tilegeneration/config.yaml, "
        "else tilegeneration/config.yaml.mako, as TileCloud-chain)",
    )  # fmt: skip
    # The short options are TileCloud-chain's.
    parser.add_argument(
        "-l",
        "--layer",
        action="append",
        metavar="NAME",
        help="layer to generate, repeatable (default: generation.default_layers)",
    )
    parser.add_argument(
        "--cache",
        metavar="NAME",
        help="tile store (default: the layer's, generation.default_cache)",
    )
    parser.add_argument(
        "-z",
        "--zoom",
        metavar="LEVELS",
        help="levels: 5, 2-8 or 2,4,7 (default: the pre-generated levels, those whose "
        "resolution is at least the layer's min_resolution_seed)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-b",
        "--bbox",
        nargs="+",
        metavar="COORD",
        help="MINX MINY MAXX MAXY (TileCloud-chain's), or MINX,MINY,MAXX,MAXY, in the CRS of "
        "the layer's first grid, or of --grid (default: the layer's bbox)",
    )
    where.add_argument(
        "--geom",
        metavar="FILE",
        help="GeoJSON or WKT in the grid's CRS: only the tiles that intersect it (and the "
        "layer's geoms)",
    )
    where.add_argument(
        "--tiles",
        metavar="FILE",
        help="z/x/y lines (an expire list, an error file): regenerate the metatiles holding them",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--get-hash",
        metavar="Z/X/Y",
        help="render a uniform tile (plain sea or land) and print its empty_tile_detection",
    )
    action.add_argument(
        "--get-bbox", metavar="Z/X/Y", help="print the bbox of a tile and of its metatile"
    )
    action.add_argument(
        "--delete-empty",
        action="store_true",
        help="delete the stored tiles that match the layer's empty_tile_detection",
    )
    action.add_argument(
        "--dry-run",
        action="store_true",
        help="print the metatiles and tiles that would be generated (and, with --update, "
        "invalidated), change nothing",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="after a data update inside --geom, --bbox or --tiles: regenerate the "
        "pre-generated levels there, then delete the on-demand levels' tiles there from "
        "Memcached (with --zoom: only those of these levels)",
    )
    parser.add_argument(
        "--max-invalidate",
        type=int,
        metavar="N",
        default=MAX_INVALIDATE,
        help="--update refuses to delete more than N cached tiles: flush Memcached "
        f"instead (default: {MAX_INVALIDATE})",
    )
    parser.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="Mapnik render processes (default: generation.number_process, else the cores)",
    )
    parser.add_argument(
        "--error-file",
        metavar="FILE",
        help="where failed metatiles are appended as z/x/y lines (default: "
        f"generation.error_file, else {ERROR_FILE})",
    )
    parser.add_argument(
        "--state-file",
        metavar="FILE",
        help="resume file (default: .generate_tiles-<hash of the selection>.state here)",
    )
    parser.add_argument(
        "--metrics-file",
        metavar="FILE",
        help="write the run's counters by layer in Prometheus' text format at the end "
        "(for node_exporter's textfile collector: a *.prom file in its folder)",
    )
    # Generation across many machines: TileCloud-chain's roles (slave is worker).
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="local",
        help="local: generate here (default); master: put the selection's metatiles in the "
        "queue (the `sqs` or `redis` section) as jobs; worker (or slave): render the queue's "
        "jobs until it is empty",
    )
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="--role worker: wait for jobs forever instead of stopping once the queue is empty",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="--role master: wait until the workers have emptied the queue, then announce the "
        "end (on the `sns` topic, and the Redis channel STREAM:end)",
    )
    tcc_options.verbosity(parser, "generate_verbose")
    tcc_options.add_generate(parser)  # TileCloud-chain's spellings, in one place


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate_tiles",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(prog_name="generate_tiles")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `generate_tiles` console script."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Runs a parsed `generate_tiles` / `tileserver generate` command; the exit status."""
    prog = getattr(args, "prog_name", "generate_tiles")
    try:
        tcc_options.normalize(args, prog, sys.stderr)
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.status
    verbose = args.generate_verbose or getattr(args, "verbose", False)
    level = logging.DEBUG if verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_errors(prog, args.config, exc.messages)
        return 1
    if not args.quiet:
        print_config_warnings(prog, config)
        for warning in empty_tile_warnings(config):
            print(f"{prog}: warning: {warning}", file=sys.stderr)
    try:
        command = Command(config, args, prog)
        return command.run()
    except ConfigError as exc:  # a Mapnik file that does not load
        print_config_errors(prog, args.config, exc.messages)
        return 1
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.status
    except GeomsError as exc:  # a layer's `geoms` file or query, read when the run starts
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except QueueUnavailable as exc:  # --role master/worker: Redis, SQS or SNS
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# --- what the command line selects ---------------------------------------------------------


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


def parse_bbox(text: str) -> BBox:
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 4:
            raise ValueError(f"expected 4 numbers, got {len(parts)}")
        return BBox(*(float(p) for p in parts))
    except ValueError as exc:
        raise CommandError(f"--bbox {text!r}: {exc} (minx,miny,maxx,maxy)", 2) from None


def read_geometry(path: str) -> tuple[BaseGeometry, bytes]:
    """A GeoJSON (geometry, Feature or FeatureCollection) or WKT file; and its bytes."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"--geom {path}: cannot read it: {exc.strerror}", 2) from None
    try:
        return parse_geometry(raw), raw
    except ValueError as exc:
        raise CommandError(f"--geom {path}: {exc}", 2) from None


def read_selection(args: argparse.Namespace) -> Selection:
    given = [f"--{name}" for name in ("bbox", "geom", "tiles", "tile", "near")
             if getattr(args, name) is not None]  # fmt: skip
    if len(given) > 1:
        raise CommandError(f"{' and '.join(given)} cannot be combined: give one area", 2)
    if args.near is not None:
        x, y = args.near
        return Selection(near=(x, y), key=f"near {x!r},{y!r} {args.test}")
    if args.tile is not None:
        try:
            tile = parse_tile(args.tile)
        except ValueError as exc:
            raise CommandError(f"--tile: {exc}", 2) from None
        return Selection(tiles=[tile], key=f"tile {args.tile}")
    if args.bbox is not None:
        bbox = parse_bbox(args.bbox)
        return Selection(bbox=bbox, key="bbox " + ",".join(map(repr, bbox.as_tuple())))
    if args.geom is not None:
        geometry, raw = read_geometry(args.geom)
        return Selection(geometry=geometry, key="geom " + hashlib.sha1(raw).hexdigest())
    if args.tiles is not None:
        if Path(args.tiles).resolve() == Path(args.error_file).resolve():
            raise CommandError(
                f"--tiles {args.tiles} is also the error file, which this run appends to: "
                f"move it aside first (mv {args.tiles} {args.tiles}.retry)",
                2,
            )
        try:
            raw = Path(args.tiles).read_bytes()
            tiles = read_tile_list(raw.decode("utf-8").splitlines())
        except OSError as exc:
            raise CommandError(f"--tiles {args.tiles}: cannot read it: {exc.strerror}", 2) from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise CommandError(f"--tiles {args.tiles}: {exc}", 2) from None
        return Selection(tiles=tiles, key="tiles " + hashlib.sha1(raw).hexdigest())
    return Selection()


def _bbox_text(bbox: BBox) -> str:
    return ",".join(format_resolution(v) for v in bbox.as_tuple())


def _intersect_areas(
    areas: dict[int, BaseGeometry], geometry: BaseGeometry, zooms: Sequence[int]
) -> dict[int, BaseGeometry]:
    """geometry at every level of zooms, intersected with the area of the levels that
    have one."""
    intersections: dict[int, BaseGeometry] = {}  # by id: levels often share one area
    result: dict[int, BaseGeometry] = {}
    for z in zooms:
        area = areas.get(z)
        if area is None:
            result[z] = geometry
            continue
        if id(area) not in intersections:
            intersections[id(area)] = area.intersection(geometry)
        result[z] = intersections[id(area)]
    return result


def _intersection(a: BBox, b: BBox) -> BBox | None:
    if not a.intersects(b):
        return None
    return BBox(max(a.minx, b.minx), max(a.miny, b.miny), min(a.maxx, b.maxx), min(a.maxy, b.maxy))


# --- the command ---------------------------------------------------------------------------


@dataclass
class _Control:
    """What a Ctrl-C changes while the generation runs."""

    stopping: bool = False
    current: TileGenerator | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)


class Command:
    """One `generate_tiles` invocation over a loaded configuration."""

    def __init__(self, config: Config, args: argparse.Namespace, prog: str) -> None:
        self.config = config
        self.args = args
        self.prog = prog
        self.out: TextIO = sys.stdout
        self.err: TextIO = sys.stderr
        if args.error_file is None:
            args.error_file = config.generation.error_file or ERROR_FILE

    def info(self, message: str) -> None:
        if not self.args.quiet:
            print(f"{self.prog}: {message}", file=self.err)

    # --- settings ---------------------------------------------------------------------

    def layers(self) -> list[Layer]:
        names = list(self.args.layer or self.config.generation.default_layers)
        if not names:
            raise CommandError(
                "no layer to generate: pass --layer NAME or set generation.default_layers "
                f"(layers: {', '.join(self.config.layers)})"
            )
        unknown = [n for n in names if n not in self.config.layers]
        if unknown:
            raise CommandError(
                f"--layer: unknown layer {unknown[0]!r} (defined: {', '.join(self.config.layers)})",
                2,
            )
        return [self.config.layers[n] for n in dict.fromkeys(names)]

    def one_layer(self, option: str) -> Layer:
        """The one layer of --layer, on --grid (default: its first grid)."""
        layers = self.layers()
        if len(layers) != 1:
            names = ", ".join(layer.name for layer in layers)
            raise CommandError(f"{option} works on one layer: pass --layer (one of {names})", 2)
        return self.tile_sets(layers[0])[0].layer

    def tile_sets(self, layer: Layer) -> list[TileSet]:
        """What the run renders of layer: each grid (or --grid) and each combination of its
        dimensions' `generate` values (or --dimensions)."""
        given = self.args.dimension_values
        unknown = set(given) - {d.name for layer in self.layers() for d in layer.dimensions}
        if unknown:
            raise CommandError(f"--dimensions: no layer has a dimension {sorted(unknown)[0]}", 2)
        try:
            return tile_sets(layer, self.args.grid, given)
        except ValueError as exc:
            option = "--grid" if "no grid" in str(exc) else "--dimensions"
            raise CommandError(f"{option}: {exc}", 2) from None

    def cache_of(self, layer: Layer) -> str:
        name: str | None = self.args.cache or layer.cache
        if name is None:
            raise CommandError(
                f"layer {layer.name!r} has no tile store: pass --cache NAME, or set "
                f"layers.{layer.name}.cache or generation.default_cache "
                f"(caches: {', '.join(self.config.caches) or 'none'})"
            )
        if name not in self.config.caches:
            defined = ", ".join(self.config.caches) or "none"
            raise CommandError(f"--cache: unknown cache {name!r} (defined: {defined})", 2)
        return name

    def zoom_option(self, layer: Layer) -> tuple[int, ...]:
        try:
            return parse_zooms(self.args.zoom, len(layer.grid.resolutions))
        except ValueError as exc:
            raise CommandError(f"--zoom {self.args.zoom!r}: {exc}", 2) from None

    def zooms_of(self, layer: Layer, selection: Selection) -> tuple[int, ...]:
        if self.args.zoom is not None:
            return self.zoom_option(layer)
        if selection.tiles is not None:
            return tuple(sorted({t.z for t in selection.tiles}))
        seed = layer.min_resolution_seed
        if seed is None:
            raise CommandError(
                f"no level to generate for layer {layer.name!r}: pass --zoom, or set "
                f"layers.{layer.name}.min_resolution_seed (levels whose resolution is at "
                "least it are pre-generated)"
            )
        zooms = tuple(z for z, r in enumerate(layer.grid.resolutions) if r >= seed)
        if not zooms:
            raise CommandError(
                f"layers.{layer.name}.min_resolution_seed {seed:g} is finer than every "
                f"level of grid {layer.grid.name!r}: nothing is pre-generated"
            )
        return zooms

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
        layer_geoms = layer_geoms and self.args.geom_filter and selection.near is None
        bbox = layer.bbox
        if selection.bbox is not None:
            clipped = _intersection(selection.bbox, layer.bbox)
            if clipped is None:
                raise CommandError(
                    f"--bbox {_bbox_text(selection.bbox)} does not intersect layer "
                    f"{layer.name!r}'s bbox {_bbox_text(layer.bbox)} ({grid.srs})",
                    2,
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
                raise CommandError(
                    f"--geom {self.args.geom}: the geometry does not reach layer "
                    f"{layer.name!r}'s bbox {_bbox_text(bbox)}: its coordinates must be in "
                    f"the grid's CRS, {grid.srs}",
                    2,
                )
        # The area of each level: the layer's geoms there, intersected with --geom.
        areas = self.layer_geometries(layer, zooms) if layer_geoms else {}
        if selection.geometry is not None:
            areas = _intersect_areas(areas, selection.geometry, zooms)
        metatiles = metatiles_in_areas(grid, zooms, areas, meta_size, bbox)
        return LayerJob(layer, cache, zooms, metatiles, tiles_in_areas(grid, areas, bbox))

    def on_grid(self, layer: Layer, selection: Selection, zooms: Sequence[int]) -> Selection:
        """The selection in the CRS of layer's grid: --bbox and --geom are in its first
        grid's (or --grid's), --tiles name tiles of one grid, --near picks a bbox."""
        if selection.near is not None:
            if self.args.test is None or len(zooms) != 1:
                raise CommandError("--near goes with --test N and one --zoom level", 2)
            x, y = selection.near
            if self.args.grid is None and layer.grid.name != layer.grids[0].name:
                x, y = transformer(layer.grids[0].srs, layer.grid.srs).transform(x, y)
            bbox = near_bbox(layer, x, y, zooms[0], self.args.test)
            return dataclasses.replace(selection, bbox=bbox)
        if selection.grid == layer.grid.name:
            return selection  # in its CRS already
        if self.args.grid is not None or layer.grid.name == layer.grids[0].name:
            return selection
        if selection.tiles is not None:
            raise CommandError(
                f"--tiles names tiles of one grid, and layer {layer.name!r} has several: "
                f"pass --grid (one of {', '.join(layer.grid_names)})",
                2,
            )
        source, here = layer.grids[0].srs, layer.grid.name
        if selection.geometry is not None:
            geometry = reproject(selection.geometry, source, layer.grid.srs)
            return dataclasses.replace(selection, geometry=geometry, grid=here)
        if selection.bbox is not None:
            try:
                bbox = in_first_grid(layer, selection.bbox)
            except ValueError as exc:
                raise CommandError(f"--bbox: on grid {here!r}: {exc}", 2) from None
            return dataclasses.replace(selection, bbox=bbox, grid=here)
        return selection

    def layer_geometries(self, layer: Layer, zooms: Sequence[int]) -> dict[int, BaseGeometry]:
        """The union of the layer's `geoms` entries at each level of zooms they apply to,
        files read and queries run now; the levels no entry applies to are left out."""
        grid = layer.grid
        used = [
            (i, geom)
            for i, geom in enumerate(layer.geoms)
            if any(geom.applies_to(grid.resolutions[z]) for z in zooms)
        ]
        if not used:
            return {}
        from tileserver.adapters.geoms import load_geometry

        loaded = []
        for i, geom in used:
            where = f"layers.{layer.name}.geoms[{i}]"
            # In the CRS of the layer's first grid, as its bbox: reprojected to this grid's.
            geometry = reproject(load_geometry(geom, where), layer.grids[0].srs, grid.srs)
            levels = format_zooms([z for z in zooms if geom.applies_to(grid.resolutions[z])])
            if geometry.is_empty:
                print(
                    f"{self.prog}: warning: {where}: the query returned no geometry: it adds "
                    f"nothing to levels {levels}",
                    file=self.err,
                )
            elif not geometry.intersects(shapely.box(*layer.bbox.as_tuple())):
                raise GeomsError(
                    f"{where}: the geometry does not reach layer {layer.name!r}'s bbox "
                    f"{_bbox_text(layer.bbox)}: its coordinates must be in the grid's CRS, "
                    f"{grid.srs}"
                )
            else:
                kind = f"file {geom.file}" if geom.file is not None else "query"
                self.info(f"{where}: the {kind} limits levels {levels}")
            loaded.append((geom, geometry))
        return level_geometries(grid.resolutions, zooms, loaded, layer.px_buffer)

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
        if self.args.test is not None:
            left = self.args.test
            for job in jobs:
                counts = {r: len(wanted_tiles(job.layer, r, job.wanted)) for r in job.metatiles}
                job.metatiles = first_tiles(job.metatiles, counts, left)
                job.tiles = None
                left = max(0, left - sum(counts[r] for r in job.metatiles))
        return jobs

    def state_file(self, jobs: Sequence[LayerJob], selection: Selection) -> Path:
        if self.args.state_file:
            return Path(self.args.state_file).resolve()
        digest = hashlib.sha1()
        for job in jobs:
            layer = job.layer
            defaults = {d.name: d.default for d in layer.dimensions} | job.dimensions
            dims = ",".join(f"{name}={value}" for name, value in defaults.items())
            grid = f" {layer.grid.name}" if layer.grid.name != layer.grids[0].name else ""
            test = f" test {self.args.test}" if self.args.test is not None else ""
            digest.update(
                f"{layer.name}{grid} {job.cache} {layer.effective_meta_size} {dims} "
                f"{format_zooms(job.zooms)}{test}\n".encode()
            )
        digest.update(selection.key.encode())
        return Path.cwd() / f".generate_tiles-{digest.hexdigest()[:12]}.state"

    def processes(self) -> int:
        processes: int | None = self.args.processes or self.config.generation.number_process
        if processes is not None and processes < 1:
            raise CommandError(f"--processes must be at least 1, got {processes}", 2)
        return processes or os.cpu_count() or 1

    # --- actions ----------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        if args.role != "local" or args.daemon or args.wait:
            return self.distributed()
        if args.update:
            for option, value in (("--get-bbox", args.get_bbox), ("--get-hash", args.get_hash),
                                  ("--delete-empty", args.delete_empty)):  # fmt: skip
                if value:
                    raise CommandError(f"--update cannot be combined with {option}", 2)
        if args.get_bbox:
            return self.get_bbox()
        if args.get_hash:
            return asyncio.run(self.get_hash())
        selection = read_selection(args)
        if args.update:
            return self.update(selection)
        # Empty tiles go wherever they are: --delete-empty needs no `geoms`.
        jobs = self.jobs(selection, layer_geoms=not args.delete_empty)
        if args.dry_run:
            return self.dry_run(jobs)
        if args.delete_empty:
            return asyncio.run(self.delete_empty(jobs, selection))
        return self.generate_jobs(jobs, selection)

    def generate_jobs(self, jobs: Sequence[LayerJob], selection: Selection) -> int:
        """Renders the jobs into their stores, resuming from the state file; the exit status."""
        args = self.args
        state_file = self.state_file(jobs, selection)
        error_file = Path(args.error_file).resolve()
        processes = self.processes()
        for job in jobs:
            self.describe(job)
        resuming = state_file.exists()
        self.info(f"state file {state_file}{' (resuming)' if resuming else ''}")
        if resuming:
            self.remove_stale_temporaries(jobs)
        return asyncio.run(self.generate(jobs, state_file, error_file, processes))

    def remove_stale_temporaries(self, jobs: Sequence[LayerJob]) -> None:
        """Removes the temporary files a killed run left in a folder store (a write in
        progress when it died), under the levels this run writes."""
        from tileserver.adapters.filesystem_store import is_temporary

        removed = 0
        for job in jobs:
            cache = self.config.caches[job.cache]
            if cache.type != "filesystem":
                continue
            layer, grid = job.layer, job.layer.grid
            dimension_values = tuple(
                job.dimensions.get(d.name, d.default) for d in layer.dimensions
            )
            for z in job.zooms:
                prefix = tile_prefix(
                    "", layer.name, layer.wmts_style, dimension_values, grid.name,
                    grid.matrix_id(z),
                )  # fmt: skip
                for folder, _, names in os.walk(Path(cache.folder) / prefix):
                    for name in names:
                        if is_temporary(name):
                            leftover = Path(folder, name)
                            try:
                                leftover.unlink(missing_ok=True)
                            except OSError as exc:  # a store still read-only, say
                                raise CommandError(
                                    f"cannot remove {leftover}, left by the interrupted run: "
                                    f"{exc.strerror}"
                                ) from None
                            removed += 1
        if removed:
            self.info(f"removed {removed} temporary file(s) left by the interrupted run")

    def tile_arg(self, layer: Layer, option: str, text: str) -> TileCoord:
        try:
            coord = parse_tile(text)
        except ValueError as exc:
            raise CommandError(f"{option}: {exc}", 2) from None
        if not layer.grid.contains(coord):
            raise CommandError(
                f"{option} {text}: no such tile in grid {layer.grid.name!r} "
                f"(levels 0 to {len(layer.grid.resolutions) - 1})",
                2,
            )
        return coord

    def get_bbox(self) -> int:
        layer = self.one_layer("--get-bbox")
        coord = self.tile_arg(layer, "--get-bbox", self.args.get_bbox)
        meta_size = layer.effective_meta_size
        ref = metatile_ref(coord, meta_size)
        metatile = metatile_of(layer, ref)
        grid = layer.grid
        last = metatile.tiles[-1].coord
        print(f"tile {self.args.get_bbox.strip()} ({grid.srs}):", file=self.out)
        print(f"  bbox: {_bbox_text(grid.tile_bbox(coord))}", file=self.out)
        print(
            f"metatile {tile_line(ref)} to {last.z}/{last.col}/{last.row} "
            f"({metatile.cols}x{metatile.rows} tiles):",
            file=self.out,
        )
        print(f"  bbox: {_bbox_text(metatile_bbox(grid, ref, meta_size))}", file=self.out)
        print(f"  rendered with its buffer: {_bbox_text(metatile.bbox)}", file=self.out)
        return 0

    async def get_hash(self) -> int:
        from tileserver.adapters.renderers import LayerRenderer

        layer = self.one_layer("--get-hash")
        text = self.args.get_hash.strip()
        coord = self.tile_arg(layer, "--get-hash", text)
        renderer = LayerRenderer(
            [layer], 1, self.config.server.render_timeout, self.config.upstream
        )
        await renderer.start()
        try:
            metatile = metatile_of(layer, metatile_ref(coord, layer.effective_meta_size))
            dimensions = {d.name: d.default for d in layer.dimensions}
            dimensions |= {k: v for k, v in self.args.dimension_values.items() if k in dimensions}
            try:
                tiles = await renderer.render(layer, metatile, dimensions)
            except TileServerError as exc:
                raise CommandError(f"--get-hash {text}: cannot render it: {exc}") from None
        finally:
            await renderer.close()
        data = tiles[coord]
        colours = colour_count(data)
        if colours != 1:
            raise CommandError(
                f"tile {text} is not uniform ({colours} colours): pick a tile of plain sea or land"
            )
        colour = tiles.uniform.get(coord) if isinstance(tiles, RenderedTiles) else None
        detected = dataclasses.replace(signature(data), color=colour)
        self.info(f"tile {text} of layer {layer.name!r} is uniform, {detected.size} bytes")
        print(f"    # layers.{layer.name}, from tile {text}:", file=self.out)
        print(detection_yaml(detected), end="", file=self.out)
        return 0

    def dry_run(self, jobs: Sequence[LayerJob]) -> int:
        total_metatiles = total_tiles = 0
        for job in jobs:
            layer = job.layer
            print(
                f"layer {job.label} -> cache {job.cache}, grid {layer.grid.name}, "
                f"zooms {format_zooms(job.zooms)}:",
                file=self.out,
            )
            for z in job.zooms:
                refs = [r for r in job.metatiles if r.z == z]
                tiles = sum(len(wanted_tiles(layer, r, job.wanted)) for r in refs)
                print(f"  zoom {z}: {len(refs)} metatiles, {tiles} tiles", file=self.out)
                total_metatiles += len(refs)
                total_tiles += tiles
        print(f"total: {total_metatiles} metatiles, {total_tiles} tiles", file=self.out)
        return 0

    # --- --role master / worker: generation across many machines ------------------------

    def distributed(self) -> int:
        """--role master or worker (and the checks of --daemon and --wait); the exit status."""
        args = self.args
        role = "worker" if args.role == "slave" else args.role
        if args.daemon and role != "worker":
            raise CommandError("--daemon goes with --role worker", 2)
        if args.wait and role != "master":
            raise CommandError("--wait goes with --role master", 2)
        excluded = {"--update": args.update, "--delete-empty": args.delete_empty,
                    "--get-hash": args.get_hash, "--get-bbox": args.get_bbox}  # fmt: skip
        for option, value in excluded.items():
            if value:
                raise CommandError(f"--role {args.role} cannot be combined with {option}", 2)
        if role == "worker":
            chosen = [option for option, value in (
                ("--layer", args.layer), ("--cache", args.cache), ("--zoom", args.zoom),
                ("--bbox", args.bbox), ("--geom", args.geom), ("--tiles", args.tiles),
                ("--dry-run", args.dry_run)) if value]  # fmt: skip
            if chosen:
                raise CommandError(
                    f"--role {args.role} takes its jobs from the queue, which the master filled: "
                    f"leave out {', '.join(chosen)}",
                    2,
                )
        from tileserver.adapters.queues import queue_for

        queue = queue_for(self.config)
        if queue is None:
            raise CommandError(
                f"--role {args.role} needs a `sqs` or `redis` section in {args.config}: the queue "
                "of the jobs (see 'Generation across many machines' in the README)"
            )
        if role == "worker":
            return asyncio.run(self.work(queue))
        jobs = self.jobs(read_selection(args))
        if args.dry_run:
            return self.dry_run(jobs)
        return asyncio.run(self.enqueue(jobs, queue))

    async def enqueue(self, jobs: Sequence[LayerJob], queue: JobQueue) -> int:
        """--role master: the jobs of every metatile into the queue, and with --wait, the
        wait for the end and its announcement; the exit status."""
        from tileserver.adapters.queues import notifiers_for

        for job in jobs:
            self.describe(job)
        messages = [
            (job.id, encode_job(job))
            for layer_job in jobs
            for job in layer_jobs(
                layer_job.layer,
                layer_job.cache,
                layer_job.metatiles,
                layer_job.wanted,
                layer_job.dimensions,
            )
        ]
        await queue.open(create=True)
        try:
            added = await queue.put(messages)
            print(
                f"enqueued {added} jobs on {queue.name} ({len(messages) - added} of the "
                f"{len(messages)} already queued or in flight)",
                file=self.out,
            )
            if not self.args.wait:
                return 0
            start = await queue.counts()
            last_line = 0.0

            def progress(counts: QueueCounts) -> None:
                nonlocal last_line
                now = time.monotonic()
                if not self.args.quiet and now - last_line >= PLAIN_PROGRESS_EVERY:
                    last_line = now
                    self.info(f"{counts.queued} jobs queued, {counts.in_flight} in flight, "
                              f"{counts.failed} failed")  # fmt: skip

            poll = min(PLAIN_PROGRESS_EVERY, max(0.5, queue.lease / 4))
            end = await wait_until_empty(
                queue, poll=poll, settle=queue.counts_delay, progress=progress
            )
            failed = max(0, end.failed - start.failed)
            names = ", ".join(f"{j.layer.name} (zooms {format_zooms(j.zooms)})" for j in jobs)
            message = (
                f"The generation of {names} is finished: {len(messages)} jobs, {failed} of "
                f"them failed. {end.failed} jobs are in the error list of {queue.name} "
                "(generate_controller --status lists them with their reasons)."
            )
            for notifier in notifiers_for(self.config, queue):
                await notifier.publish("tileserver: generation finished", message)
                self.info(f"announced the end on {notifier.name}")
            print(f"finished: {len(messages)} jobs, {failed} failed", file=self.out)
            if failed:
                print(f"{self.prog}: {failed} job(s) failed: generate_controller --status "
                      "lists them", file=self.err)  # fmt: skip
            return 1 if failed else 0
        finally:
            await queue.close()

    async def work(self, queue: JobQueue) -> int:
        """--role worker: renders the queue's jobs until it is empty (or forever with
        --daemon, until SIGINT or SIGTERM); the exit status."""
        from tileserver.adapters.renderers import LayerRenderer
        from tileserver.adapters.stores import store_for

        processes = self.processes()
        await queue.open()
        renderer = None
        worker: Worker | None = None
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()

        def on_signal() -> None:
            if worker is None or worker.stats.interrupted:
                if main_task is not None:
                    main_task.cancel()  # a second Ctrl-C: stop now
                return
            worker.stats.interrupted = True
            self.info("stopping: finishing the jobs under way (Ctrl-C again to stop now)")
            worker.stop()

        last_line = time.monotonic()

        def progress(stats: WorkerStats) -> None:
            nonlocal last_line
            now = time.monotonic()
            if not self.args.quiet and now - last_line >= PLAIN_PROGRESS_EVERY:
                last_line = now
                self.info(f"{stats.done} jobs, {stats.tiles_written + stats.empty_dropped} "
                          f"tiles, {stats.tiles_per_second:.1f} tiles/s")  # fmt: skip

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        try:
            renderer = LayerRenderer(
                list(self.config.layers.values()),
                processes,
                self.config.server.render_timeout,
                self.config.upstream,
            )
            await renderer.start()
            stores = {
                name: store_for(cache, self.config) for name, cache in self.config.caches.items()
            }
            worker = Worker(
                queue,
                renderer,
                stores,
                self.config.layers,
                concurrency=processes + 1,
                daemon=self.args.daemon,
                wait=DAEMON_WAIT if self.args.daemon else WORKER_WAIT,
                progress=progress,
            )
            self.info(f"worker with {processes} render process(es), jobs from {queue.name}")
            stats = await worker.run()
        except asyncio.CancelledError:
            if main_task is not None:
                main_task.uncancel()
            print("interrupted: the jobs under way come back after the lease", file=self.err)
            return EXIT_INTERRUPTED
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if renderer is not None:
                await renderer.close()
            await queue.close()
        print(stats.summary(), file=self.out)
        if stats.stopped_by is not None:
            print(f"{self.prog}: stopped: {stats.stopped_by}", file=self.err)
            return 1
        if stats.interrupted:
            print("interrupted: the jobs not started stay in the queue", file=self.err)
            return EXIT_INTERRUPTED
        return 0

    # --- --update: regenerate, then invalidate ------------------------------------------

    def update(self, selection: Selection) -> int:
        """--update: regenerates the pre-generated levels inside the selection, then deletes
        the tiles of the on-demand levels there from Memcached; the exit status."""
        args = self.args
        memcached = self.config.shared_cache  # Memcached's or Redis's section, or None
        if not selection.explicit:
            raise CommandError(
                "--update needs --geom, --bbox or --tiles: without one it would invalidate "
                f"every cached tile. To drop them all, flush Memcached instead: {self.flush_hint()}"
                " (tileserver renders them again on demand)",
                2,
            )
        if args.max_invalidate < 0:
            raise CommandError(f"--max-invalidate must be at least 0, got {args.max_invalidate}", 2)
        jobs: list[LayerJob] = []
        invalidations: list[Invalidation] = []
        for base in self.layers():
            for tile_set in self.tile_sets(base):
                layer = tile_set.layer
                area_selection, area = self.update_area(layer, self.on_grid(layer, selection, ()))
                stored, on_demand = self.update_zooms(layer)
                if stored:
                    job = self.job(
                        layer,
                        area_selection,
                        self.cache_of(layer),
                        stored,
                        layer_geoms=selection.tiles is None,  # a tile list is not filtered
                    )
                    job.dimensions = dict(tile_set.dimensions)
                    jobs.append(job)
                seen = {(inv.layer.name, inv.layer.grid.name) for inv in invalidations}
                if on_demand and (layer.name, layer.grid.name) not in seen:
                    # One per grid: the invalidation covers every dimension value.
                    prefix = memcached.prefix if memcached is not None else ""
                    invalidations.append(Invalidation(layer, on_demand, area, prefix))
        # Per invalidation, (metatiles, tiles) by level.
        counts = [{z: inv.count(z) for z in inv.zooms} for inv in invalidations]
        to_invalidate = sum(tiles for levels in counts for _, tiles in levels.values())
        if memcached is None and to_invalidate:
            self.warn_in_process_caches(invalidations)
        too_many = memcached is not None and to_invalidate > args.max_invalidate
        levels = format_zooms(sorted({z for inv in invalidations for z in inv.zooms}))
        if args.dry_run:
            self.dry_run(jobs)
            self.dry_run_invalidation(invalidations, counts, too_many)
            return 0
        if too_many:
            raise CommandError(
                f"--update would invalidate {to_invalidate} cached tiles at levels {levels}, "
                f"more than --max-invalidate {args.max_invalidate}: flush Memcached instead "
                f"({self.flush_hint()}; tileserver renders them again on demand), or raise "
                "--max-invalidate"
            )
        status = 0
        if any(job.metatiles for job in jobs):
            # Its own state file: the metatiles of an --update differ from a plain run's.
            status = self.generate_jobs(
                jobs, dataclasses.replace(selection, key=selection.key + " update")
            )
            if status == EXIT_INTERRUPTED:
                return status
        else:
            self.info("no pre-generated level to regenerate")
        if memcached is None or not invalidations:
            return status
        return max(status, asyncio.run(self.invalidate(invalidations, to_invalidate, levels)))

    def update_zooms(self, layer: Layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(pre-generated, on-demand) levels of an --update: every level, or those of --zoom."""
        if self.args.zoom is None:
            chosen: Sequence[int] = range(len(layer.grid.resolutions))
        else:
            chosen = self.zoom_option(layer)
        stored = tuple(z for z in chosen if not layer.is_on_demand(z))
        return stored, tuple(z for z in chosen if layer.is_on_demand(z))

    def check_tiles_in_grid(self, grid: Grid, tiles: Iterable[TileCoord]) -> None:
        """CommandError (status 2) naming the first --tiles tile outside the grid."""
        outside = [t for t in tiles if not grid.contains(t)]
        if outside:
            raise CommandError(
                f"--tiles {self.args.tiles}: tile {outside[0].z}/{outside[0].col}/"
                f"{outside[0].row} is outside grid {grid.name!r}",
                2,
            )

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
            area = clip_to_layer(layer, shapely.box(*selection.bbox.as_tuple()))
        else:
            assert selection.geometry is not None  # an explicit selection
            area = clip_to_layer(layer, selection.geometry)
        if area.is_empty:
            if self.args.bbox is not None:
                what = f"--bbox {self.args.bbox}"
            elif self.args.geom is not None:
                what = f"--geom {self.args.geom}: the geometry"
            else:
                what = f"--tiles {self.args.tiles}: the tiles"
            raise CommandError(
                f"{what} does not reach layer {layer.name!r}'s bbox {_bbox_text(layer.bbox)}: "
                f"coordinates must be in the grid's CRS, {grid.srs}",
                2,
            )
        return selection, area

    def flush_hint(self) -> str:
        from tileserver.adapters.tile_caches import flush_hint

        if self.config.shared_cache is None:
            return "echo flush_all | nc -q 2 HOST PORT"
        return flush_hint(self.config)

    def warn_in_process_caches(self, invalidations: Sequence[Invalidation]) -> None:
        for inv in invalidations:
            print(
                f"{self.prog}: warning: layer {inv.layer.name}: the config has no `memcached` "
                f"(nor `redis_cache`) setting, so the on-demand levels "
                f"{format_zooms(inv.zooms)} live in each server's in-process cache and cannot "
                "be invalidated from outside: they show the old data until they expire "
                f"({inv.layer.expires_hours:g} h) or the servers restart. Set `memcached` to "
                "invalidate them with --update.",
                file=self.err,
            )

    def dry_run_invalidation(
        self,
        invalidations: Sequence[Invalidation],
        counts: Sequence[dict[int, tuple[int, int]]],
        too_many: bool,
    ) -> None:
        from tileserver.adapters.tile_caches import shared_cache_for

        shared = shared_cache_for(self.config)
        where = (
            f"{shared.name} {', '.join(shared.addresses)}"
            if shared is not None
            else "each server's in-process cache: not possible"
        )
        total_metatiles = total_tiles = 0
        for inv, levels in zip(invalidations, counts, strict=True):
            label = TileSet(inv.layer).label
            print(
                f"invalidate layer {label} in {where}, zooms {format_zooms(inv.zooms)}:",
                file=self.out,
            )
            for z, (metatiles, tiles) in levels.items():
                print(f"  zoom {z}: {metatiles} metatiles, {tiles} tiles", file=self.out)
                total_metatiles += metatiles
                total_tiles += tiles
        total = f"{total_metatiles} metatiles, {total_tiles} tiles"
        print(f"total to invalidate: {total}", file=self.out)
        if too_many:
            print(
                f"more than --max-invalidate {self.args.max_invalidate}: --update would refuse "
                f"(flush Memcached instead: {self.flush_hint()})",
                file=self.out,
            )

    async def invalidate(
        self, invalidations: Sequence[Invalidation], total: int, levels: str
    ) -> int:
        """Deletes the keys of the invalidations from Memcached or Redis; the exit status."""
        from tileserver.adapters.tile_caches import shared_cache_for

        memcached = self.config.shared_cache
        cache = shared_cache_for(self.config)
        assert memcached is not None and cache is not None
        retry = f"when it is back, run the same command with --zoom {levels} to invalidate them"
        stats = InvalidationStats()
        last_line = time.monotonic()

        def progress(stats: InvalidationStats) -> None:
            nonlocal last_line
            now = time.monotonic()
            if not self.args.quiet and now - last_line >= PLAIN_PROGRESS_EVERY:
                last_line = now
                self.info(f"invalidating: {stats.keys}/{total} keys")

        async def unreachable() -> list[str]:
            alive = await cache.ping()
            return [address for address in cache.addresses if address not in alive]

        try:
            down = await unreachable()
            if down:
                print(
                    f"{self.prog}: {cache.name} {', '.join(down)} not reachable: the on-demand "
                    f"tiles at levels {levels} were NOT invalidated ({retry})",
                    file=self.err,
                )
                return 1
            self.info(
                f"invalidating {total} tiles at levels {levels} in {cache.name} "
                f"{', '.join(cache.addresses)}"
            )
            keys = itertools.chain.from_iterable(inv.keys() for inv in invalidations)
            try:
                await delete_keys(
                    cache, keys, stats, concurrency=memcached.pool_size, progress=progress
                )
            except CacheUnavailable as exc:
                down = await unreachable()
                print(
                    f"{self.prog}: {cache.name} failed after {stats.keys} of {total} tiles: {exc}"
                    f" (not reachable: {', '.join(down) or 'none'}); {retry}",
                    file=self.err,
                )
                return 1
        finally:
            await cache.close()
        print(
            f"invalidated {stats.deleted} cached tiles at levels {levels} "
            f"({stats.keys} keys checked, {stats.elapsed:.1f} s)",
            file=self.out,
        )
        return 0

    async def delete_empty(self, jobs: Sequence[LayerJob], selection: Selection) -> int:
        from tileserver.adapters.stores import store_for

        for job in jobs:
            if job.layer.empty_tile_detection is None:
                raise CommandError(
                    f"--delete-empty: layers.{job.layer.name}.empty_tile_detection is not "
                    "set (get it with --get-hash Z/X/Y on a tile of plain sea or land)"
                )
        checked = deleted = 0
        for job in jobs:
            layer, grid = job.layer, job.layer.grid
            detection = layer.empty_tile_detection
            assert detection is not None  # checked above
            store = store_for(self.config.caches[job.cache], self.config)
            await store.open()
            try:
                for z in job.zooms:
                    prefix = tile_prefix(
                        "", layer.name, layer.wmts_style,
                        tuple(job.dimensions.get(d.name, d.default) for d in layer.dimensions),
                        grid.name, grid.matrix_id(z),
                    )  # fmt: skip
                    batch: list[str] = []
                    async for path in store.list_paths(prefix):
                        parsed = parse_tile_path("", path)
                        if parsed is None or parsed.extension != layer.extension:
                            continue
                        if selection.explicit and not job.wanted(
                            TileCoord(z, parsed.row, parsed.col)
                        ):
                            continue
                        batch.append(path)
                        if len(batch) == _DELETE_BATCH:
                            deleted += await _delete_if_empty(store, batch, detection)
                            checked += len(batch)
                            batch = []
                    deleted += await _delete_if_empty(store, batch, detection)
                    checked += len(batch)
            finally:
                await store.close()
        print(f"deleted: {deleted} empty tiles of {checked} checked", file=self.out)
        return 0

    async def generate(
        self, jobs: Sequence[LayerJob], state_file: Path, error_file: Path, processes: int
    ) -> int:
        """Renders every job's metatiles into its store; the exit status."""
        from tileserver.adapters.renderers import LayerRenderer
        from tileserver.adapters.stores import store_for

        renderer = LayerRenderer(
            [j.layer for j in jobs],
            processes,
            self.config.server.render_timeout,
            self.config.upstream,
        )
        await renderer.start()
        stores: dict[str, TileStore] = {}
        control = _Control()
        by_layer: dict[str, GenerationStats] = {}
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()

        def on_signal() -> None:
            if control.stopping:
                if main_task is not None:
                    main_task.cancel()  # a second Ctrl-C: stop now
                return
            control.stopping = True
            self.info("stopping: finishing the metatiles in flight (Ctrl-C again to stop now)")
            if control.current is not None:
                control.current.stop()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        progress = _ProgressDisplay(self, jobs)
        try:
            for job in jobs:
                if job.cache not in stores:
                    store = store_for(self.config.caches[job.cache], self.config)
                    await store.open()
                    stores[job.cache] = store
            for job in jobs:
                if control.stopping:
                    control.stats.interrupted = True
                    break
                generator = TileGenerator(
                    job.layer,
                    renderer,
                    stores[job.cache],
                    dimensions=job.dimensions,
                    wanted=job.wanted,
                    concurrency=processes + 1,
                    error_file=error_file,
                    state_file=state_file,
                    progress=progress.update,
                    # -d (TileCloud-chain's): stop on the first error
                    max_consecutive_errors=(
                        1 if self.args.debug else self.config.generation.maxconsecutive_errors
                    ),
                )
                control.current = generator
                progress.start(job)
                layer_stats = await generator.run(job.metatiles)
                by_layer.setdefault(job.layer.name, GenerationStats()).add(layer_stats)
                control.stats.add(layer_stats)
                control.current = None
                if layer_stats.store_outage is not None or layer_stats.too_many_errors:
                    break  # the store fails as a whole, or the source: stop, resumable
        except asyncio.CancelledError:
            if main_task is not None:
                main_task.uncancel()
            control.stats.interrupted = True
            control.stats.finished = time.monotonic()
        finally:
            progress.close()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            for store in stores.values():
                await store.close()
            await renderer.close()

        stats = control.stats
        print(stats.summary(), file=self.out)
        if self.args.metrics_file:
            await asyncio.to_thread(write_metrics_file, self.args.metrics_file, by_layer)
        if stats.failed:
            print(
                f"{self.prog}: {stats.failed} metatile(s) failed, listed in {error_file}: "
                f"replay them with --tiles (move the file aside first)",
                file=self.err,
            )
        if stats.store_outage is not None:
            # Kept, created if no metatile was finished: the rerun resumes, and removes the
            # temporary files a write cut short may have left in a folder store.
            await asyncio.to_thread(state_file.touch)
            print(
                f"{self.prog}: stopped, the tile store fails: {stats.store_outage}\n"
                f"{self.prog}: once it works again (space freed, writable, reachable), run the "
                f"same command again: it resumes from {state_file}",
                file=self.err,
            )
            return 1
        if stats.too_many_errors is not None:
            await asyncio.to_thread(state_file.touch)
            print(
                f"{self.prog}: stopped: {stats.too_many_errors}\n{self.prog}: once the cause "
                f"is fixed, run the same command again: it resumes from {state_file}",
                file=self.err,
            )
            return 1
        if stats.interrupted:
            print("interrupted: run the same command again to resume", file=self.err)
            return EXIT_INTERRUPTED
        await asyncio.to_thread(state_file.unlink, missing_ok=True)
        return 1 if stats.failed else 0

    def describe(self, job: LayerJob) -> None:
        layer = job.layer
        seed = layer.min_resolution_seed
        on_demand = [z for z in job.zooms if seed is None or layer.grid.resolutions[z] < seed]
        if on_demand:
            why = (
                "it has no min_resolution_seed"
                if seed is None
                else "finer than min_resolution_seed"
            )
            log.warning(
                "layer %s: the server renders levels %s on demand (%s) and does not read them "
                "from the store",
                layer.name,
                format_zooms(on_demand),
                why,
            )
        self.info(
            f"layer {job.label} -> cache {job.cache}, zooms {format_zooms(job.zooms)}: "
            f"{len(job.metatiles)} metatiles"
        )


async def _delete_if_empty(store: TileStore, paths: list[str], detection: EmptyTile) -> int:
    """Deletes those of paths whose tile matches detection; how many."""
    if not paths:
        return 0
    found = await asyncio.gather(*(store.get(p) for p in paths))
    empty = [
        p
        for p, data in zip(paths, found, strict=True)
        if data is not None and is_stored_empty(data, detection)
    ]
    if empty:
        await store.delete_many(empty)
    return len(empty)


class _ProgressDisplay:
    """A tqdm bar of tiles on a terminal; elsewhere a plain line every few seconds."""

    def __init__(self, command: Command, jobs: Sequence[LayerJob]) -> None:
        self.command = command
        self.quiet = bool(command.args.quiet)
        self.terminal = command.err.isatty()
        self.bar: Any = None
        self.total_metatiles = 0
        self.layer = ""
        self.last_line = time.monotonic()
        if not self.quiet and self.terminal:
            from tqdm import tqdm

            total = sum(job.count_tiles() for job in jobs)
            self.bar = tqdm(total=total, unit="tile", file=command.err, dynamic_ncols=True)

    def start(self, job: LayerJob) -> None:
        self.layer = job.layer.name
        self.total_metatiles = len(job.metatiles)
        if self.bar is not None:
            self.bar.set_description(job.layer.name)

    def update(self, outcome: MetatileOutcome, stats: GenerationStats) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(outcome.tiles)
            if stats.failed:
                self.bar.set_postfix(failed=stats.failed, refresh=False)
            return
        now = time.monotonic()
        if now - self.last_line >= PLAIN_PROGRESS_EVERY:
            self.last_line = now
            finished = stats.done + stats.skipped + stats.failed
            print(
                f"{self.command.prog}: {self.layer}: {finished}/{self.total_metatiles} metatiles, "
                f"{stats.tiles_written + stats.empty_dropped} tiles, "
                f"{stats.tiles_per_second:.1f} tiles/s",
                file=self.command.err,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
