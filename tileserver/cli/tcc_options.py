"""TileCloud-chain's options of `generate_tiles`, `generate_controller` and
`generate_cost`, as TileCloud-chain spells them (its `add_common_options`, `generate.py`,
`controller.py`, `cost.py`, 1.x and current), so that its users' scripts run unchanged.

The options tileserver has a meaning for are honoured (`-b MINX MINY MAXX MAXY`, `-g`,
`-t`, `--near`, `--no-geom`, `--dimensions`, `--local-process-number`, `-d`...); those it
has none for are accepted, and `normalize` says so, once, naming what to do instead.
Definitions here, in one place; `normalize` turns them into the commands' own settings.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tileserver.cli.common import CommandError

# Where TileCloud-chain looks for its configuration without -c.
DEFAULT_CONFIGS = ("tilegeneration/config.yaml", "tilegeneration/config.yaml.mako")
POSTGRESQL_QUEUE = (
    "TileCloud-chain's PostgreSQL job queue, which tileserver does not offer: distributed "
    "generation is --role master/worker over Redis or SQS"
)
# dest -> why the option does nothing here.
NO_EFFECT = {
    "host": "it names the host in TileCloud-chain's JSON logs and Prometheus statistics",
    "ignore_error": "tileserver never runs with a configuration it cannot read: "
    "`tileserver check-config` names every mistake",
    "detach": "start the command in the background with your shell or service manager",
    "job_id": POSTGRESQL_QUEUE,
    "job_title": POSTGRESQL_QUEUE,
    "logging_configuration_file": "-q, -v and -d set what is logged",
    "time": "the summary line gives the tiles per second (use --test N for a short run)",
    "legends": "tileserver publishes no legend images",
    "apache": "tileserver serves its tiles itself; a web server in front needs no "
    "configuration of tileserver's",
    "mapcache_version": "the MapCache configuration is written for MapCache 1.6 and later",
    "cost_algo": "tileserver counts the tiles of the levels exactly",
}


def add_config(parser: argparse.ArgumentParser) -> None:
    """-c/--config; without it, TileCloud-chain's DEFAULT_CONFIGS (see `normalize`)."""
    parser.add_argument(
        "-c", "--config",
        help="YAML file, or a Mako template (*.mako) "
        f"(default: {', else '.join(DEFAULT_CONFIGS)}, as TileCloud-chain)",
    )  # fmt: skip


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options of every TileCloud-chain command that tileserver's lack."""
    parser.add_argument("--host", help="(TileCloud-chain's; no effect here)")
    parser.add_argument(
        "--ignore-error", action="store_true", help="(TileCloud-chain's; no effect here)"
    )
    parser.add_argument(
        "--logging-configuration-file", metavar="FILE", help="(TileCloud-chain's; no effect here)"
    )


def add_generate(parser: argparse.ArgumentParser) -> None:
    """generate_tiles' TileCloud-chain options that its own definitions lack."""
    add_common(parser)
    parser.add_argument(
        "-g", "--grid", metavar="NAME",
        help="only this grid of the layers (default: every grid of each layer)",
    )  # fmt: skip
    parser.add_argument(
        "-t", "--test", type=int, metavar="N",
        help="generate the first N tiles of the selection only (a trial run)",
    )  # fmt: skip
    parser.add_argument(
        "--near", type=float, nargs=2, metavar=("X", "Y"),
        help="with --test N and one --zoom level: the metatiles around X Y (in the grid's "
        "CRS) holding about N tiles, in place of --bbox; implies --no-geom",
    )  # fmt: skip
    parser.add_argument(
        "--time", "--measure-generation-time", dest="time", type=int, metavar="N",
        help="(TileCloud-chain's; no effect here)",
    )  # fmt: skip
    parser.add_argument(
        "--no-geom", dest="geom_filter", action="store_false",
        help="do not limit the generation to the layers' `geoms`",
    )  # fmt: skip
    parser.add_argument(
        "--dimensions", nargs="+", metavar="NAME=VALUE", default=[],
        help="render this value of a dimension, in place of its `generate` values",
    )  # fmt: skip
    parser.add_argument(
        "--local-process-number", type=int, metavar="N", help="the same as --processes"
    )
    parser.add_argument("--tile", metavar="Z/X/Y", help="generate the metatile of this tile")
    parser.add_argument("--detach", action="store_true", help="(TileCloud-chain's; no effect)")
    parser.add_argument("--job-id", help="(TileCloud-chain's; no effect here)")
    parser.add_argument("--job-title", help="(TileCloud-chain's; no effect here)")


def add_controller(parser: argparse.ArgumentParser) -> None:
    """generate_controller's TileCloud-chain options that its own definitions lack."""
    add_common(parser)
    parser.add_argument(
        "--legends", "--generate-legend-images", dest="legends", action="store_true",
        help="(TileCloud-chain's; no effect here)",
    )  # fmt: skip
    parser.add_argument(
        "--apache", "--generate-apache-config", dest="apache", action="store_true",
        help="(TileCloud-chain 1.x's; no effect here)",
    )  # fmt: skip
    parser.add_argument("--mapcache-version", help="(TileCloud-chain 1.x's; no effect here)")
    verbosity(parser, "generate_verbose")


def verbosity(parser: argparse.ArgumentParser, verbose_dest: str) -> None:
    """-q, -v, -d: only errors, information, everything (TileCloud-chain's)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, only the summary and errors"
    )
    # Its own dest: `tileserver -v generate` sets the top-level `verbose`.
    group.add_argument("-v", "--verbose", dest=verbose_dest, action="store_true",
                       help="information messages")  # fmt: skip
    group.add_argument(
        "-d", "--debug", action="store_true",
        help="debug messages; a generation stops at its first failed metatile",
    )  # fmt: skip


def default_config(folder: Path) -> str:
    """TileCloud-chain's configuration without -c: tilegeneration/config.yaml, else its
    .mako, in folder; CommandError naming both."""
    for name in DEFAULT_CONFIGS:
        if (folder / name).is_file():
            return name
    raise CommandError(
        f"no configuration: pass -c FILE, or run where {' or '.join(DEFAULT_CONFIGS)} is", 2
    )


def bbox_text(values: Sequence[str]) -> str:
    """--bbox as TileCloud-chain writes it (4 arguments) or as tileserver did (1, with
    commas): 'minx,miny,maxx,maxy'; CommandError otherwise."""
    parts = [p for v in values for p in re.split(r"[,\s]+", v.strip()) if p]
    if len(parts) != 4:
        given = " ".join(values)
        raise CommandError(
            f"--bbox {given!r}: expected 4 numbers, MINX MINY MAXX MAXY (or MINX,MINY,MAXX,MAXY)",
            2,
        )
    return ",".join(parts)


def parse_dimensions(values: Sequence[str]) -> dict[str, str]:
    """--dimensions NAME=VALUE...; CommandError for another form (TileCloud-chain's rule)."""
    found: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name or not text or "=" in text:
            raise CommandError(
                f"--dimensions {value!r}: expected NAME=VALUE, e.g. --dimensions DATE=2013", 2
            )
        found[name] = text
    return found


def normalize(args: argparse.Namespace, prog: str, err: TextIO) -> None:
    """TileCloud-chain's options as the command's own settings; a note for each one that
    has no effect here."""
    if getattr(args, "config", None) is None:
        args.config = default_config(Path.cwd())
    if isinstance(getattr(args, "bbox", None), list):
        args.bbox = bbox_text(args.bbox)
    number = getattr(args, "local_process_number", None)
    if number is not None:
        if getattr(args, "processes", None) not in (None, number):
            raise CommandError("--local-process-number and --processes disagree", 2)
        args.processes = number
    if getattr(args, "debug", False):
        args.generate_verbose = True
    args.dimension_values = parse_dimensions(getattr(args, "dimensions", None) or [])
    for dest, why in NO_EFFECT.items():
        value = getattr(args, dest, None)
        if value not in (None, False, "area"):  # "area": --cost-algo's default
            option = "--" + dest.replace("_", "-")
            print(f"{prog}: note: {option} is accepted for TileCloud-chain's sake and does "
                  f"nothing here: {why}", file=err)  # fmt: skip


def normalize_or_report(args: argparse.Namespace, prog: str, err: TextIO) -> int:
    """`normalize`, then 0; for an option it refuses (or no configuration to find), the
    message printed and the exit status."""
    try:
        normalize(args, prog, err)
    except CommandError as exc:
        print(f"{prog}: {exc}", file=err)
        return exc.status
    return 0
