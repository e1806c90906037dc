"""`generate_tiles` --get-bbox, --get-hash and --delete-empty: what a tile covers, the
empty_tile_detection of a uniform tile, and the stored tiles that match it deleted."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from tileserver import composition
from tileserver.cli.common import CommandError
from tileserver.cli.generate_context import GenerateContext
from tileserver.config import EmptyTile
from tileserver.empty_tiles import colour_count, detection_yaml, is_stored_empty, signature
from tileserver.errors import TileServerError
from tileserver.grid import bbox_text
from tileserver.protocols import TileStore
from tileserver.selection import metatile_bbox, metatile_ref
from tileserver.services.plan_selection import Selection
from tileserver.services.planning import LayerJob
from tileserver.services.run_files import tile_line
from tileserver.services.tile_filters import metatile_of
from tileserver.store_layout import parse_tile_path, tile_prefix
from tileserver.types import RenderedTiles, TileCoord

_DELETE_BATCH = 64  # tiles read at once by --delete-empty


def get_bbox(ctx: GenerateContext) -> int:
    layer = ctx.planner.one_layer("--get-bbox")
    coord = ctx.planner.tile_arg(layer, "--get-bbox", ctx.args.get_bbox)
    meta_size = layer.effective_meta_size
    ref = metatile_ref(coord, meta_size)
    metatile = metatile_of(layer, ref)
    grid = layer.grid
    last = metatile.tiles[-1].coord
    print(f"tile {ctx.args.get_bbox.strip()} ({grid.srs}):", file=ctx.out)
    print(f"  bbox: {bbox_text(grid.tile_bbox(coord))}", file=ctx.out)
    print(
        f"metatile {tile_line(ref)} to {last.z}/{last.col}/{last.row} "
        f"({metatile.cols}x{metatile.rows} tiles):",
        file=ctx.out,
    )
    print(f"  bbox: {bbox_text(metatile_bbox(grid, ref, meta_size))}", file=ctx.out)
    print(f"  rendered with its buffer: {bbox_text(metatile.bbox)}", file=ctx.out)
    return 0


async def get_hash(ctx: GenerateContext) -> int:
    layer = ctx.planner.one_layer("--get-hash")
    text = ctx.args.get_hash.strip()
    coord = ctx.planner.tile_arg(layer, "--get-hash", text)
    renderer = composition.generation_renderer([layer], 1, ctx.config)
    await renderer.start()
    try:
        metatile = metatile_of(layer, metatile_ref(coord, layer.effective_meta_size))
        dimensions = {d.name: d.default for d in layer.dimensions}
        dimensions |= {k: v for k, v in ctx.args.dimension_values.items() if k in dimensions}
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
    ctx.info(f"tile {text} of layer {layer.name!r} is uniform, {detected.size} bytes")
    print(f"    # layers.{layer.name}, from tile {text}:", file=ctx.out)
    print(detection_yaml(detected), end="", file=ctx.out)
    return 0


async def delete_empty(ctx: GenerateContext, jobs: Sequence[LayerJob], selection: Selection) -> int:
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
        store = composition.tile_store(ctx.config.caches[job.cache], ctx.config)
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
                    if selection.explicit and not job.wanted(TileCoord(z, parsed.row, parsed.col)):
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
    print(f"deleted: {deleted} empty tiles of {checked} checked", file=ctx.out)
    return 0


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
