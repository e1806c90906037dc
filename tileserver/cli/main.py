"""The `tileserver` command: serve, check-config, generate, controller."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tileserver.cli import controller as controller_command
from tileserver.cli import generate as generate_command
from tileserver.cli.check_config import cmd_check_config
from tileserver.cli.common import setup_logging
from tileserver.cli.serve import cmd_serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tileserver", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the WMTS server")
    serve.add_argument("--config", required=True, help="YAML file, or a Mako template (*.mako)")
    serve.add_argument("--host", help="address to listen on (default: server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port")
    serve.add_argument("--render-processes", type=int, help="Mapnik processes per server process")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or JSON (default: server.log_format)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--master-pid", type=int, help=argparse.SUPPRESS)  # set by the master
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration and its Mapnik files")
    check.add_argument("config", help="YAML file, or a Mako template (*.mako)")
    check.set_defaults(func=cmd_check_config)

    generate = sub.add_parser(
        "generate",
        help="pre-generate tiles into a tile store (the same as generate_tiles)",
        description=generate_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate_command.add_arguments(generate)
    generate.set_defaults(func=generate_command.run, prog_name="tileserver generate")

    controller = sub.add_parser(
        "controller",
        help="write the Capabilities and an OpenLayers page into a tile store, dump the "
        "configuration, estimate costs (the same as generate_controller)",
        description=controller_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    controller_command.add_arguments(controller)
    controller.set_defaults(func=controller_command.run, prog_name="tileserver controller")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, getattr(args, "log_format", None) or "text")
    result: int = args.func(args)
    return result
