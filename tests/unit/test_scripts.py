"""The console scripts import nothing of their commands until they run (render processes
spawned by a script import the script again, so they would carry every command)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tileserver.cli import scripts

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tileserver.cli.main", "tileserver.cli.generate", "tileserver.cli.controller",
         "tileserver.config", "aiohttp", "shapely", "pyproj", "mapnik")  # fmt: skip


def test_importing_the_scripts_module_imports_no_command() -> None:
    code = (
        "import sys, tileserver.cli.scripts\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("script", "command"),
    [
        ("tileserver", "tileserver.cli.main"),
        ("generate_tiles", "tileserver.cli.generate"),
        ("generate_controller", "tileserver.cli.controller"),
    ],
)
def test_each_console_script_runs_its_command(script: str, command: str) -> None:
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][script]
    assert entry == f"tileserver.cli.scripts:{script}"
    assert callable(getattr(scripts, script))
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; from tileserver.cli.scripts import {script}; "
         f"sys.argv = ['{script}', '--help']; {script}()"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_the_tileserver_command_imports_the_capabilities_templates_only_to_publish() -> None:
    """cli/main.py imports every command to build its parser: the controller's publishing
    (Mako, the Capabilities service) waits until it runs, the other commands never need it
    (serve imports it with its application)."""
    publishing = ("mako", "tileserver.services.capabilities", "tileserver.services.publishing")
    code = (
        "import sys, tileserver.cli.main\n"
        f"print(','.join(m for m in {publishing!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
