"""Helpers every command shares: logging, the configuration loaded with its errors
reported, and the errors of a command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tileserver.config import Config
from tileserver.config_loader import load_config
from tileserver.errors import ConfigError


class CommandError(Exception):
    """A problem with the command line or with the settings it needs; `status` is the
    exit status (1: configuration, 2: an option's value)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def command_parser(
    prog: str, description: str | None, add_arguments: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """The parser of a command run as its own console script (generate_tiles...): its
    options, its module's docstring as description, and `prog` in its messages
    (`args.prog_name`, as `tileserver generate` sets it for its subcommand)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(prog_name=prog)
    return parser


def setup_logging(verbose: bool = False, log_format: str = "text") -> None:
    from tileserver.log_format import setup_logging

    setup_logging(log_format, verbose)


def load_or_report(path: str, prog: str = "tileserver") -> Config | None:
    """The configuration at path; None once its errors are printed."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print_config_errors(prog, path, exc.messages)
        return None


def print_config_warnings(prog: str, config: Config) -> None:
    """The configuration's warnings (TileCloud-chain keys without effect here...), once,
    when a command starts: a file runs unchanged, and says what it does not do."""
    for warning in config.warnings:
        print(f"{prog}: warning: {warning}", file=sys.stderr)


def print_config_errors(prog: str, path: str, messages: Sequence[str]) -> None:
    """Every configuration mistake, one per line, as all the commands report them."""
    print(f"{prog}: invalid configuration {path}:", file=sys.stderr)
    for message in messages:
        print(f"  {message}", file=sys.stderr)
