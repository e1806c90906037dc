"""What the parts of one `generate_tiles` run share: the configuration, the options,
the planner of its jobs, its messages, and the output every part prints the same way."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from tileserver import composition
from tileserver.cli.common import CommandError
from tileserver.config import Config
from tileserver.selection import format_zooms
from tileserver.services.plan_selection import PlanOptions, Selection, read_selection
from tileserver.services.planning import LayerJob, Planner
from tileserver.services.tile_filters import wanted_tiles

log = logging.getLogger("tileserver.generate")

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
PLAIN_PROGRESS_EVERY = 5.0  # seconds between two progress lines when not on a terminal


class ProgressLines:
    """When to print a plain progress line (not on a terminal): at most once every
    PLAIN_PROGRESS_EVERY seconds, the first one at once or that long after the start;
    never with -q."""

    def __init__(self, quiet: bool, at_once: bool = False) -> None:
        self.quiet = quiet
        self.last = 0.0 if at_once else time.monotonic()

    def due(self) -> bool:
        """True when a line is due now (and counts it printed)."""
        now = time.monotonic()
        if self.quiet or now - self.last < PLAIN_PROGRESS_EVERY:
            return False
        self.last = now
        return True


class GenerateContext:
    """One `generate_tiles` invocation over a loaded configuration."""

    def __init__(self, config: Config, args: argparse.Namespace, prog: str) -> None:
        self.config = config
        self.args = args
        self.prog = prog
        self.out: TextIO = sys.stdout
        self.err: TextIO = sys.stderr
        options = PlanOptions(
            args.layer, args.cache, args.zoom, args.bbox, args.geom, args.tiles,
            tile=args.tile,
            near=None if args.near is None else (args.near[0], args.near[1]),
            grid=args.grid,
            test=args.test,
            geom_filter=args.geom_filter,
            dimension_values=args.dimension_values,
        )  # fmt: skip
        self.planner = Planner(config, options, composition.load_geometry, self.info, self.warn)

    def info(self, message: str) -> None:
        if not self.args.quiet:
            print(f"{self.prog}: {message}", file=self.err)

    def warn(self, message: str) -> None:
        print(f"{self.prog}: warning: {message}", file=self.err)

    def read_selection(self) -> Selection:
        """--bbox, --geom or --tiles, files read."""
        return read_selection(self.planner.options, self.args.error_file)

    def processes(self) -> int:
        processes: int | None = self.args.processes or self.config.generation.number_process
        if processes is not None and processes < 1:
            raise CommandError(f"--processes must be at least 1, got {processes}", 2)
        return processes or os.cpu_count() or 1

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
