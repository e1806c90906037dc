"""The `generate_controller` command (also `tileserver controller`): what goes with the
pre-generated tiles, TileCloud-chain's command of the same name.

    generate_controller -c tileserver.yaml --generate-wmts-capabilities
    generate_controller -c tileserver.yaml --openlayers-test
    generate_controller -c tileserver.yaml --dump-config
    generate_controller -c tileserver.yaml --cost --layer roads
    generate_controller -c tileserver.yaml --generate-mapcache-config

The Capabilities and the OpenLayers page are written into the tile store (a folder or an
S3 bucket), so that clients can use the pre-generated tiles straight from the store's
public URL (`caches.NAME.http_url`), without the server. The MapCache configuration goes
to a local file (default mapcache.xml), for MapCache in front of the `type: wms` layers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import yaml

from tileserver import composition
from tileserver.cli import export_pmtiles, queue_status, tcc_options
from tileserver.cli.atomic_file import write_atomically
from tileserver.cli.common import (
    CommandError,
    command_parser,
    print_config_errors,
    print_config_warnings,
)
from tileserver.config import (
    CacheConfig,
    Config,
    Layer,
)
from tileserver.config.dump import config_data
from tileserver.config_loader import load_config
from tileserver.errors import (
    ConfigError,
    InvalidSelection,
    PlanningError,
    QueueUnavailable,
    StoreUnavailable,
)
from tileserver.selection import named_layers, parse_zooms, seeded_zooms
from tileserver.services.cost import (
    cost_report,
)
from tileserver.services.mapcache_config import has_mapcache_source, mapcache_config

if TYPE_CHECKING:
    from tileserver.services.publishing import Files

ACTIONS = (
    "generate_wmts_capabilities",
    "openlayers_test",
    "dump_config",
    "cost",
    "generate_mapcache_config",
    "export_pmtiles",
    "status",
)


# --- the command line ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tcc_options.add_config(parser)
    parser.add_argument(
        "-l",
        "--layer",
        action="append",
        metavar="NAME",
        help="layer, repeatable (default: generation.default_layers)",
    )
    parser.add_argument(
        "--cache",
        metavar="NAME",
        help="tile store to write to (default: generation.default_cache, else the layers')",
    )
    actions = parser.add_argument_group("actions (one or more, run in this order)")
    actions.add_argument(
        "--dump-config",
        action="store_true",
        help="print the configuration as it is read: Mako rendered, layer_default merged, "
        "defaults filled",
    )
    actions.add_argument(
        "--generate-wmts-capabilities",
        "--capabilities",
        action="store_true",
        help="write the WMTS Capabilities of the layers' stored tiles into the cache, at "
        "its wmtscapabilities_file, with tile URLs under its http_url",
    )
    actions.add_argument(
        "--openlayers-test",
        "--generate-openlayers-testpage",  # TileCloud-chain 1.x's name
        "--openlayers",
        action="store_true",
        help="write an OpenLayers page (index.html) into the cache that shows the layers of "
        "those Capabilities",
    )
    actions.add_argument(
        "--cost",
        action="store_true",
        help="estimate the tiles, generation time and S3 costs of the layers (see `cost`)",
    )
    actions.add_argument(
        "--generate-mapcache-config",
        "--mapcache",
        action="store_true",
        help="write a MapCache configuration: a memcache cache on memcached.servers, a "
        "tileset per type: wms layer (--layer, default: every layer)",
    )
    actions.add_argument(
        "--export-pmtiles",
        metavar="OUT.pmtiles",
        help="write the stored tiles of one --layer (levels: --zoom, default the pre-generated "
        "ones) from its cache (or --cache) into one PMTiles archive, e.g. for a CDN",
    )
    actions.add_argument(
        "--status",
        action="store_true",
        help="the queue of generate_tiles --role master/worker (`sqs` or `redis`): jobs "
        "queued, in flight and failed, and the failed ones with their reasons",
    )
    parser.add_argument(
        "--mapcache-config-file",
        metavar="PATH",
        default="mapcache.xml",
        help="where --generate-mapcache-config writes (default: mapcache.xml)",
    )
    parser.add_argument(
        "-z",
        "--zoom",
        metavar="LEVELS",
        help="levels for --cost: 5, 2-8 or 2,4,7 (default: the pre-generated levels, "
        "those whose resolution is at least the layer's min_resolution_seed)",
    )
    tcc_options.add_controller(parser)  # TileCloud-chain's spellings, in one place


def build_parser() -> argparse.ArgumentParser:
    return command_parser("generate_controller", __doc__, add_arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """The `generate_controller` console script."""
    return run(build_parser().parse_args(argv))


def cost_main(argv: Sequence[str] | None = None) -> int:
    """The `generate_cost` console script (TileCloud-chain's): generate_controller --cost."""
    parser = build_parser()
    parser.prog = "generate_cost"
    parser.add_argument(
        "--cost-algo", "--calculate-cost-algorithm", dest="cost_algo", default="area",
        choices=("area", "count"), help="(TileCloud-chain's; tileserver counts the tiles)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.cost, args.prog_name = True, "generate_cost"
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Runs a parsed `generate_controller` / `tileserver controller` command; the exit status."""
    prog = getattr(args, "prog_name", "generate_controller")
    if status := tcc_options.normalize_or_report(args, prog, sys.stderr):
        return status
    if not any(getattr(args, action) for action in ACTIONS):
        options = ", ".join("--" + action.replace("_", "-") for action in ACTIONS)
        print(f"{prog}: nothing to do: pass one or more of {options}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_errors(prog, args.config, exc.messages)
        return 1
    if not args.quiet:
        print_config_warnings(prog, config)
    try:
        return Controller(config, args, prog).run()
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.status
    except StoreUnavailable as exc:
        print(f"{prog}: cannot write to the tile store: {exc}", file=sys.stderr)
        return 1
    except QueueUnavailable as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1


# --- the command ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Write:
    """Files to write into a cache, and what to tell once they are written."""

    cache: CacheConfig
    files: Files
    what: str


class Controller:
    """One `generate_controller` invocation over a loaded configuration."""

    def __init__(self, config: Config, args: argparse.Namespace, prog: str) -> None:
        self.config = config
        self.args = args
        self.prog = prog
        self.out: TextIO = sys.stdout
        self.err: TextIO = sys.stderr

    def info(self, message: str) -> None:
        print(f"{self.prog}: {message}", file=self.err)

    # --- settings ---------------------------------------------------------------------

    def layers(self) -> list[Layer]:
        config = self.config
        try:
            return named_layers(
                config.layers, self.args.layer or (), config.generation.default_layers, "use"
            )
        except InvalidSelection as exc:
            raise CommandError(str(exc), 2) from None
        except PlanningError as exc:
            raise CommandError(str(exc)) from None

    def cache(self, layers: Sequence[Layer]) -> CacheConfig:
        """--cache, else generation.default_cache, else the one cache of the layers."""
        caches = self.config.caches
        defined = ", ".join(caches) or "none"
        name: str | None = self.args.cache or self.config.generation.default_cache
        if name is None:
            used = sorted({layer.cache for layer in layers if layer.cache is not None})
            if len(used) > 1:
                raise CommandError(
                    f"the layers are in different caches ({', '.join(used)}): pass --cache "
                    "NAME, or set generation.default_cache"
                )
            if not used:
                where = " or ".join(f"layers.{layer.name}.cache" for layer in layers[:2])
                raise CommandError(
                    "no cache to write to: pass --cache NAME, or set generation.default_cache"
                    f"{' or ' + where if where else ''} (caches: {defined})"
                )
            name = used[0]
        if name not in caches:
            raise CommandError(f"--cache: unknown cache {name!r} (defined: {defined})", 2)
        return caches[name]

    def zooms(self, layer: Layer) -> tuple[int, ...]:
        levels = len(layer.grid.resolutions)
        if self.args.zoom is not None:
            try:
                return parse_zooms(self.args.zoom, levels)
            except ValueError as exc:
                raise CommandError(f"--zoom {self.args.zoom!r}: {exc}", 2) from None
        try:
            return seeded_zooms(layer, "estimate")
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    # --- actions ----------------------------------------------------------------------

    def run(self) -> int:
        """Checks every setting the chosen actions need, then runs them."""
        # Imported here: the Capabilities' templates (Mako) are for this command alone, and
        # every `tileserver` command imports this module (cli/main.py builds its parser).
        from tileserver.services.publishing import capabilities_files, openlayers_files

        args = self.args
        writes: list[_Write] = []
        if args.generate_wmts_capabilities:
            layers = self.layers()
            cache = self.files_cache(self.cache(layers))
            if not cache.public_urls:
                raise CommandError(
                    f"caches.{cache.name}.http_url is not set: the Capabilities need the "
                    "public URL of the cache's root for their tile URLs (or set "
                    f"caches.{cache.name}.http_urls)"
                )
            for layer in layers:
                if layer.cache is not None and layer.cache != cache.name:
                    self.info(
                        f"warning: layer {layer.name} is generated into cache {layer.cache}, "
                        f"not {cache.name}: its tiles there may be missing"
                    )
            path = cache.wmtscapabilities_file
            names = ", ".join(layer.name for layer in layers)
            writes.append(
                _Write(
                    cache,
                    capabilities_files(self.config, layers, cache),
                    f"Capabilities of {names} at {path} ({cache.public_urls[0]}/{path})",
                )
            )
        if args.openlayers_test:
            named = args.layer or self.config.generation.default_layers
            cache = self.files_cache(
                self.cache(self.layers() if named else list(self.config.layers.values()))
            )
            files = openlayers_files(cache.wmtscapabilities_file)
            where = f" ({cache.public_urls[0]}/index.html)" if cache.public_urls else ""
            writes.append(_Write(cache, files, f"OpenLayers page at index.html{where}"))
        # Each grid of a layer is generated apart (TileCloud-chain's `grids`): estimated apart.
        cost_layers = [v for layer in self.layers() for v in layer.variants()] if args.cost else []
        cost_zooms = [self.zooms(layer) for layer in cost_layers]
        mapcache = self.mapcache_config() if args.generate_mapcache_config else None
        queue = queue_status.status_queue(self.config, args.config) if args.status else None
        export = self.export_plan() if args.export_pmtiles else None

        if args.dump_config:
            yaml.safe_dump(
                config_data(self.config),
                self.out,
                sort_keys=False,
                allow_unicode=True,
                default_flow_style=None,
            )
        if writes:
            asyncio.run(self.write(writes))
        if args.cost:
            self.cost(cost_layers, cost_zooms)
        if mapcache is not None:
            target = Path(args.mapcache_config_file)
            try:
                write_atomically(target, mapcache.encode())
            except OSError as exc:
                raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from exc
            self.info(f"wrote the MapCache configuration to {target}")
        if export is not None:
            layer, cache, zooms = export
            target = Path(args.export_pmtiles)
            asyncio.run(export_pmtiles.export(self.config, layer, cache, zooms, target, self.info))
        if queue is not None:
            asyncio.run(queue_status.print_status(queue, self.out))
        return 0

    def files_cache(self, cache: CacheConfig) -> CacheConfig:
        """cache, when it can hold files other than tiles (a folder, S3)."""
        if cache.type not in ("filesystem", "s3"):
            raise CommandError(f"cache {cache.name!r} is {cache.type}, which holds tiles only: "
                               "write the Capabilities and pages into a filesystem or s3 "
                               "cache (--cache)", 2)  # fmt: skip
        return cache

    def export_plan(self) -> tuple[Layer, CacheConfig, tuple[int, ...]]:
        """--export-pmtiles: the layer, the cache its tiles are read from, the levels."""
        layers = self.layers()
        if len(layers) != 1:
            raise CommandError("--export-pmtiles: an archive holds one layer: pass one --layer", 2)
        cache = self.cache(layers)
        if cache.type == "pmtiles":
            raise CommandError(f"--export-pmtiles: cache {cache.name!r} is a PMTiles archive "
                               "already: pass --cache with the tiles to export", 2)  # fmt: skip
        return layers[0], cache, self.zooms(layers[0])

    def mapcache_config(self) -> str:
        """The mapcache.xml text of --layer, else of every layer; warns of those left out."""
        layers = self.layers() if self.args.layer else list(self.config.layers.values())
        try:
            text = mapcache_config(self.config, layers)
        except ConfigError as exc:
            raise CommandError("--generate-mapcache-config: " + "; ".join(exc.messages)) from exc
        left_out = [layer.name for layer in layers if not has_mapcache_source(layer)]
        if left_out:
            self.info(
                f"warning: {', '.join(left_out)} left out of the MapCache configuration: "
                "MapCache has no source for Mapnik layers (only type: wms layers)"
            )
        return text

    async def write(self, writes: Iterable[_Write]) -> None:
        from tileserver.services.publishing import publish  # see run()

        for write in writes:
            store = composition.tile_store(write.cache, self.config)
            await store.open()
            try:
                await publish(store, write.files)
            finally:
                await store.close()
            self.info(f"wrote the {write.what} into cache {write.cache.name}")

    def cost(self, layers: Sequence[Layer], zooms: Sequence[tuple[int, ...]]) -> None:
        for line in cost_report(self.config, layers, zooms):
            print(line, file=self.out)
