"""`generate_tiles --update`: after a data update inside --geom, --bbox or --tiles, the
pre-generated levels there regenerated, then the on-demand levels' tiles there deleted
from Memcached."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Sequence

from tileserver import composition
from tileserver.cli.common import CommandError
from tileserver.cli.generate_context import (
    EXIT_INTERRUPTED,
    GenerateContext,
    ProgressLines,
)
from tileserver.cli.local_run import generate_jobs
from tileserver.errors import CacheUnavailable
from tileserver.selection import format_zooms
from tileserver.services.invalidation import Invalidation, InvalidationStats, delete_keys
from tileserver.services.plan_selection import Selection
from tileserver.services.planning import LayerJob
from tileserver.services.tile_sets import TileSet

MAX_INVALIDATE = 5_000_000  # default of --max-invalidate


def run(ctx: GenerateContext, selection: Selection) -> int:
    """--update: regenerates the pre-generated levels inside the selection, then deletes
    the tiles of the on-demand levels there from Memcached; the exit status."""
    args = ctx.args
    memcached = ctx.config.shared_cache  # Memcached's or Redis's section, or None
    if not selection.explicit:
        raise CommandError(
            "--update needs --geom, --bbox or --tiles: without one it would invalidate "
            f"every cached tile. To drop them all, flush Memcached instead: {flush_hint(ctx)}"
            " (tileserver renders them again on demand)",
            2,
        )
    if args.max_invalidate < 0:
        raise CommandError(f"--max-invalidate must be at least 0, got {args.max_invalidate}", 2)
    jobs: list[LayerJob] = []
    invalidations: list[Invalidation] = []
    planner = ctx.planner
    for base in planner.layers():
        for tile_set in planner.tile_sets(base):
            layer = tile_set.layer
            area_selection, area = planner.update_area(layer, planner.on_grid(layer, selection, ()))
            stored, on_demand = planner.update_zooms(layer)
            if stored:
                job = planner.job(
                    layer,
                    area_selection,
                    planner.cache_of(layer),
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
        warn_in_process_caches(ctx, invalidations)
    too_many = memcached is not None and to_invalidate > args.max_invalidate
    levels = format_zooms(sorted({z for inv in invalidations for z in inv.zooms}))
    if args.dry_run:
        ctx.dry_run(jobs)
        dry_run_invalidation(ctx, invalidations, counts, too_many)
        return 0
    if too_many:
        raise CommandError(
            f"--update would invalidate {to_invalidate} cached tiles at levels {levels}, "
            f"more than --max-invalidate {args.max_invalidate}: flush Memcached instead "
            f"({flush_hint(ctx)}; tileserver renders them again on demand), or raise "
            "--max-invalidate"
        )
    status = 0
    if any(job.metatiles for job in jobs):
        # Its own state file: the metatiles of an --update differ from a plain run's.
        status = generate_jobs(
            ctx, jobs, dataclasses.replace(selection, key=selection.key + " update")
        )
        if status == EXIT_INTERRUPTED:
            return status
    else:
        ctx.info("no pre-generated level to regenerate")
    if memcached is None or not invalidations:
        return status
    return max(status, asyncio.run(invalidate(ctx, invalidations, to_invalidate, levels)))


def flush_hint(ctx: GenerateContext) -> str:
    if ctx.config.shared_cache is None:
        return "echo flush_all | nc -q 2 HOST PORT"
    return composition.flush_hint(ctx.config)


def warn_in_process_caches(ctx: GenerateContext, invalidations: Sequence[Invalidation]) -> None:
    for inv in invalidations:
        print(
            f"{ctx.prog}: warning: layer {inv.layer.name}: the config has no `memcached` "
            f"(nor `redis_cache`) setting, so the on-demand levels "
            f"{format_zooms(inv.zooms)} live in each server's in-process cache and cannot "
            "be invalidated from outside: they show the old data until they expire "
            f"({inv.layer.expires_hours:g} h) or the servers restart. Set `memcached` to "
            "invalidate them with --update.",
            file=ctx.err,
        )


def dry_run_invalidation(
    ctx: GenerateContext,
    invalidations: Sequence[Invalidation],
    counts: Sequence[dict[int, tuple[int, int]]],
    too_many: bool,
) -> None:
    shared = composition.shared_cache(ctx.config)
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
            file=ctx.out,
        )
        for z, (metatiles, tiles) in levels.items():
            print(f"  zoom {z}: {metatiles} metatiles, {tiles} tiles", file=ctx.out)
            total_metatiles += metatiles
            total_tiles += tiles
    total = f"{total_metatiles} metatiles, {total_tiles} tiles"
    print(f"total to invalidate: {total}", file=ctx.out)
    if too_many:
        print(
            f"more than --max-invalidate {ctx.args.max_invalidate}: --update would refuse "
            f"(flush Memcached instead: {flush_hint(ctx)})",
            file=ctx.out,
        )


async def invalidate(
    ctx: GenerateContext, invalidations: Sequence[Invalidation], total: int, levels: str
) -> int:
    """Deletes the keys of the invalidations from Memcached or Redis; the exit status."""
    memcached = ctx.config.shared_cache
    cache = composition.shared_cache(ctx.config)
    assert memcached is not None and cache is not None
    retry = f"when it is back, run the same command with --zoom {levels} to invalidate them"
    stats = InvalidationStats()
    lines = ProgressLines(ctx.args.quiet)

    def progress(stats: InvalidationStats) -> None:
        if lines.due():
            ctx.info(f"invalidating: {stats.keys}/{total} keys")

    async def unreachable() -> list[str]:
        alive = await cache.ping()
        return [address for address in cache.addresses if address not in alive]

    try:
        down = await unreachable()
        if down:
            print(
                f"{ctx.prog}: {cache.name} {', '.join(down)} not reachable: the on-demand "
                f"tiles at levels {levels} were NOT invalidated ({retry})",
                file=ctx.err,
            )
            return 1
        ctx.info(
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
                f"{ctx.prog}: {cache.name} failed after {stats.keys} of {total} tiles: {exc}"
                f" (not reachable: {', '.join(down) or 'none'}); {retry}",
                file=ctx.err,
            )
            return 1
    finally:
        await cache.close()
    print(
        f"invalidated {stats.deleted} cached tiles at levels {levels} "
        f"({stats.keys} keys checked, {stats.elapsed:.1f} s)",
        file=ctx.out,
    )
    return 0
