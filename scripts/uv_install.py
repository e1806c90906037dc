"""`pip install ARGS` done by uv, told what this machine's pip configuration says.

uv reads the package indexes in parallel and installs in a few seconds what pip takes
about 25 s of CPU for, but reads no pip configuration (files, PIP_* variables): its
options are translated here from `pip config list`. Exits non-zero, saying why, when uv
cannot be installed, when the configuration holds an option not translated here, or when
uv fails; scripts/test.sh then installs with pip.

Usage: .venv/bin/python scripts/uv_install.py -e '.[test]'
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

# pip's option -> uv's; an option holding several values (space-separated) is repeated
WITH_VALUES = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
# pip's options that change nothing of what is installed, or that uv is told otherwise
# (cert: SSL_CERT_FILE; timeout: UV_HTTP_TIMEOUT; config-file: already read by pip)
IGNORED = {
    "cache-dir",
    "cert",
    "config-file",
    "default-timeout",
    "disable-pip-version-check",
    "no-cache-dir",
    "no-color",
    "no-input",
    "no-warn-script-location",
    "progress-bar",
    "quiet",
    "require-virtualenv",
    "retries",
    "root-user-action",
    "timeout",
    "verbose",
}
FALSE = {"", "0", "false", "no", "off"}


class Untranslated(Exception):
    """The pip configuration holds an option uv is not told here how to honour."""


def effective_options(listing: str) -> dict[str, str]:
    """The value `pip install` uses for each option of `pip config list`'s listing: a
    PIP_* variable (`:env:`) over the [install] section over [global], as pip orders them
    (each line's key is already the one that won among the configuration files)."""
    rank = {"global": 0, "install": 1, ":env:": 2}
    chosen: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        section, _, option = key.partition(".")
        if section not in rank:  # another command's section
            continue
        option = option.replace("_", "-")
        if option not in chosen or rank[section] >= chosen[option][0]:
            chosen[option] = (rank[section], str(ast.literal_eval(value)))
    return {option: value for option, (_, value) in chosen.items() if value}


def uv_arguments(options: dict[str, str]) -> list[str]:
    arguments: list[str] = []
    for option, value in sorted(options.items()):
        if option in IGNORED:
            continue
        if option in WITH_VALUES:
            for item in value.split():
                arguments += [WITH_VALUES[option], item]
        elif option == "no-index":
            if value.lower() not in FALSE:
                arguments.append("--no-index")
        else:
            raise Untranslated(f"{option}={value!r}")
    return arguments


def uv_environment(options: dict[str, str]) -> dict[str, str]:
    environment = dict(os.environ)
    if "cert" in options:
        environment["SSL_CERT_FILE"] = options["cert"]
    timeout = options.get("timeout", options.get("default-timeout"))
    if timeout:
        environment["UV_HTTP_TIMEOUT"] = timeout
    return environment


def main(requirements: list[str]) -> int:
    python = sys.executable  # the venv's: uv goes into it, and installs into it
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    got = subprocess.run([*pip, "install", "-q", "uv"], capture_output=True, text=True)
    if got.returncode:
        print(f"{got.stderr}uv_install.py: uv could not be installed", file=sys.stderr)
        return 1
    listing = subprocess.run(
        [*pip, "config", "list"], check=True, capture_output=True, text=True
    ).stdout
    options = effective_options(listing)
    try:
        arguments = uv_arguments(options)
    except Untranslated as e:
        print(f"uv_install.py: a pip option not translated for uv: {e}", file=sys.stderr)
        return 1
    uv = Path(python).parent / "uv"
    command = [
        str(uv), "pip", "install", "-q", "--python", python,
        # pip's choice: the best version over every index, not the first index's
        "--index-strategy", "unsafe-best-match",
        *arguments, *requirements,
    ]  # fmt: skip
    return subprocess.run(command, env=uv_environment(options)).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
