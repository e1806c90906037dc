"""The local run of `generate_tiles`: the jobs rendered here into their stores, resumable
through a state file, stopped by Ctrl-C or SIGTERM after the metatiles in flight (a second
one stops at once), with a progress bar on a terminal and plain lines elsewhere."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tileserver import composition
from tileserver.cli.common import CommandError
from tileserver.cli.generate_context import (
    EXIT_INTERRUPTED,
    GenerateContext,
    ProgressLines,
)
from tileserver.protocols import TileStore
from tileserver.services.generation import GenerationStats, MetatileOutcome, TileGenerator
from tileserver.services.plan_selection import Selection
from tileserver.services.planning import LayerJob
from tileserver.store_layout import tile_prefix


def generate_jobs(ctx: GenerateContext, jobs: Sequence[LayerJob], selection: Selection) -> int:
    """Renders the jobs into their stores, resuming from the state file; the exit status."""
    args = ctx.args
    state_file = state_path(ctx, jobs, selection)
    error_file = Path(args.error_file).resolve()
    processes = ctx.processes()
    for job in jobs:
        ctx.describe(job)
    resuming = state_file.exists()
    ctx.info(f"state file {state_file}{' (resuming)' if resuming else ''}")
    if resuming:
        remove_stale_temporaries(ctx, jobs)
    return asyncio.run(generate(ctx, jobs, state_file, error_file, processes))


def state_path(ctx: GenerateContext, jobs: Sequence[LayerJob], selection: Selection) -> Path:
    """--state-file, else .generate_tiles-<key of the jobs>.state here."""
    if ctx.args.state_file:
        return Path(ctx.args.state_file).resolve()
    return Path.cwd() / f".generate_tiles-{ctx.planner.state_key(jobs, selection)}.state"


def remove_stale_temporaries(ctx: GenerateContext, jobs: Sequence[LayerJob]) -> None:
    """Removes the temporary files a killed run left in a folder store (a write in
    progress when it died), under the levels this run writes."""
    removed = 0
    for job in jobs:
        cache = ctx.config.caches[job.cache]
        layer, grid = job.layer, job.layer.grid
        dimension_values = tuple(job.dimensions.get(d.name, d.default) for d in layer.dimensions)
        for z in job.zooms:
            prefix = tile_prefix(
                "", layer.name, layer.wmts_style, dimension_values, grid.name,
                grid.matrix_id(z),
            )  # fmt: skip
            for leftover in composition.temporary_files(cache, prefix):
                try:
                    leftover.unlink(missing_ok=True)
                except OSError as exc:  # a store still read-only, say
                    raise CommandError(
                        f"cannot remove {leftover}, left by the interrupted run: {exc.strerror}"
                    ) from None
                removed += 1
    if removed:
        ctx.info(f"removed {removed} temporary file(s) left by the interrupted run")


@dataclass
class _Control:
    """What a Ctrl-C changes while the generation runs."""

    stopping: bool = False
    current: TileGenerator | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)


async def generate(
    ctx: GenerateContext,
    jobs: Sequence[LayerJob],
    state_file: Path,
    error_file: Path,
    processes: int,
) -> int:
    """Renders every job's metatiles into its store; the exit status."""
    renderer = composition.generation_renderer([j.layer for j in jobs], processes, ctx.config)
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
        ctx.info("stopping: finishing the metatiles in flight (Ctrl-C again to stop now)")
        if control.current is not None:
            control.current.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    progress = _ProgressDisplay(ctx, jobs)
    try:
        for job in jobs:
            if job.cache not in stores:
                store = composition.tile_store(ctx.config.caches[job.cache], ctx.config)
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
                    1 if ctx.args.debug else ctx.config.generation.maxconsecutive_errors
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
    print(stats.summary(), file=ctx.out)
    if ctx.args.metrics_file:
        await asyncio.to_thread(write_metrics_file, ctx.args.metrics_file, by_layer)
    if stats.failed:
        print(
            f"{ctx.prog}: {stats.failed} metatile(s) failed, listed in {error_file}: "
            f"replay them with --tiles (move the file aside first)",
            file=ctx.err,
        )
    if stats.store_outage is not None:
        # Kept, created if no metatile was finished: the rerun resumes, and removes the
        # temporary files a write cut short may have left in a folder store.
        await asyncio.to_thread(state_file.touch)
        print(
            f"{ctx.prog}: stopped, the tile store fails: {stats.store_outage}\n"
            f"{ctx.prog}: once it works again (space freed, writable, reachable), run the "
            f"same command again: it resumes from {state_file}",
            file=ctx.err,
        )
        return 1
    if stats.too_many_errors is not None:
        await asyncio.to_thread(state_file.touch)
        print(
            f"{ctx.prog}: stopped: {stats.too_many_errors}\n{ctx.prog}: once the cause "
            f"is fixed, run the same command again: it resumes from {state_file}",
            file=ctx.err,
        )
        return 1
    if stats.interrupted:
        print("interrupted: run the same command again to resume", file=ctx.err)
        return EXIT_INTERRUPTED
    await asyncio.to_thread(state_file.unlink, missing_ok=True)
    return 1 if stats.failed else 0


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


class _ProgressDisplay:
    """A tqdm bar of tiles on a terminal; elsewhere a plain line every few seconds."""

    def __init__(self, ctx: GenerateContext, jobs: Sequence[LayerJob]) -> None:
        self.ctx = ctx
        self.quiet = bool(ctx.args.quiet)
        self.terminal = ctx.err.isatty()
        self.bar: Any = None
        self.total_metatiles = 0
        self.layer = ""
        self.lines = ProgressLines(self.quiet)
        if not self.quiet and self.terminal:
            from tqdm import tqdm

            total = sum(job.count_tiles() for job in jobs)
            self.bar = tqdm(total=total, unit="tile", file=ctx.err, dynamic_ncols=True)

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
        if self.lines.due():
            finished = stats.done + stats.skipped + stats.failed
            print(
                f"{self.ctx.prog}: {self.layer}: {finished}/{self.total_metatiles} metatiles, "
                f"{stats.tiles_written + stats.empty_dropped} tiles, "
                f"{stats.tiles_per_second:.1f} tiles/s",
                file=self.ctx.err,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
