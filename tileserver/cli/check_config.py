"""`tileserver check-config`: the validation of a configuration, Mapnik files loaded."""

from __future__ import annotations

import argparse
import sys

from tileserver.cli.common import empty_tile_warnings, load_or_report, print_config_errors
from tileserver.config import Config
from tileserver.errors import ConfigError


def check_mapfiles(config: Config) -> list[str]:
    """Initialisation stage of the validation: every Mapnik file loads."""
    from tileserver.adapters.mapnik_renderer import map_spec
    from tileserver.adapters.mapnik_worker import DatabaseUnavailable, load_map

    errors = []
    for layer in config.layers.values():
        if layer.type == "mapnik" and layer.mapfile is not None:
            try:
                load_map(map_spec(layer))
            except ConfigError as exc:
                errors.extend(exc.messages)
            except DatabaseUnavailable as exc:
                print(
                    f"warning: layers.{layer.name}: its database is unavailable, the style "
                    f"could not be checked: {exc}",
                    file=sys.stderr,
                )
            except Exception as exc:
                errors.append(f"layers.{layer.name}.mapfile: Mapnik cannot load it: {exc}")
    return errors


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    errors = check_mapfiles(config)
    for warning in empty_tile_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    if errors:
        print_config_errors("tileserver", args.config, errors)
        return 1
    print(
        f"{args.config}: OK ({len(config.layers)} layer(s): {', '.join(config.layers)}; "
        f"{len(config.grids)} grid(s): {', '.join(config.grids)})"
    )
    return 0
