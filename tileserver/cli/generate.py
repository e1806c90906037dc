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
import gc
import logging
import sys
from collections.abc import Sequence

from tileserver import composition
from tileserver.cli import distributed, local_run, tcc_options, tile_tools, update
from tileserver.cli.common import (
    CommandError,
    command_parser,
    print_config_errors,
    print_config_warnings,
)
from tileserver.cli.distributed import ROLES
from tileserver.cli.generate_context import EXIT_INTERRUPTED, GenerateContext
from tileserver.cli.update import MAX_INVALIDATE
from tileserver.config_loader import load_config
from tileserver.errors import (
    ConfigError,
    GeomsError,
    InvalidSelection,
    PlanningError,
    QueueUnavailable,
)

ERROR_FILE = "generate_tiles-errors.txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tcc_options.add_config(parser)
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
        help="render processes (Mapnik), or, when every layer is a WMS layer, GetMaps at once "
        "and threads cutting the answers (default: generation.number_process, else the cores)",
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
    return command_parser("generate_tiles", __doc__, add_arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """The `generate_tiles` console script."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Runs a parsed `generate_tiles` / `tileserver generate` command; the exit status."""
    prog = getattr(args, "prog_name", "generate_tiles")
    if status := tcc_options.normalize_or_report(args, prog, sys.stderr):
        return status
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
        for warning in composition.empty_tile_warnings(config):
            print(f"{prog}: warning: {warning}", file=sys.stderr)
    if args.error_file is None:
        args.error_file = config.generation.error_file or ERROR_FILE
    # The modules and the configuration live as long as the command: the collector stops
    # walking them at every full collection (about 30 ms of CPU a run over a WMS). The
    # console script starts with the collector off (cli/scripts.py): on from here.
    gc.freeze()
    gc.enable()
    try:
        return dispatch(GenerateContext(config, args, prog))
    except ConfigError as exc:  # a Mapnik file that does not load
        print_config_errors(prog, args.config, exc.messages)
        return 1
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.status
    except InvalidSelection as exc:  # an option's value
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except PlanningError as exc:  # a setting the run needs
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except GeomsError as exc:  # a layer's `geoms` file or query, read when the run starts
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except QueueUnavailable as exc:  # --role master/worker: Redis, SQS or SNS
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def dispatch(ctx: GenerateContext) -> int:
    """Runs the action the options choose; the exit status."""
    args = ctx.args
    if args.role != "local" or args.daemon or args.wait:
        return distributed.run(ctx)
    if args.update:
        for option, value in (("--get-bbox", args.get_bbox), ("--get-hash", args.get_hash),
                              ("--delete-empty", args.delete_empty)):  # fmt: skip
            if value:
                raise CommandError(f"--update cannot be combined with {option}", 2)
    if args.get_bbox:
        return tile_tools.get_bbox(ctx)
    if args.get_hash:
        return asyncio.run(tile_tools.get_hash(ctx))
    selection = ctx.read_selection()
    if args.update:
        return update.run(ctx, selection)
    # Empty tiles go wherever they are: --delete-empty needs no `geoms`.
    jobs = ctx.planner.jobs(selection, layer_geoms=not args.delete_empty)
    if args.dry_run:
        return ctx.dry_run(jobs)
    if args.delete_empty:
        return asyncio.run(tile_tools.delete_empty(ctx, jobs, selection))
    return local_run.generate_jobs(ctx, jobs, selection)
