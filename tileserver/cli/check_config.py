"""`tileserver check-config`: the validation of a configuration, Mapnik files loaded."""

from __future__ import annotations

import argparse
import sys

from tileserver import composition
from tileserver.cli.common import load_or_report, print_config_errors


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    for warning in config.warnings:
        _warn(warning)
    errors = composition.check_mapfiles(config, _warn)
    for warning in composition.empty_tile_warnings(config):
        _warn(warning)
    if errors:
        print_config_errors("tileserver", args.config, errors)
        return 1
    print(
        f"{args.config}: OK ({len(config.layers)} layer(s): {', '.join(config.layers)}; "
        f"{len(config.grids)} grid(s): {', '.join(config.grids)})"
    )
    return 0
