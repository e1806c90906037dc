"""The console scripts import nothing of their commands until they run (render processes
spawned by a script import the script again, so they would carry every command)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.configs import mercator_grid
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


def test_generate_tiles_imports_and_loads_its_configuration_with_the_collector_off(
    tmp_path: Path,
) -> None:
    """The collector is off while the command imports its modules and loads the
    configuration (a tenth of its start-up's CPU), then frozen and on for the run."""
    data = {
        "grids": {"g": mercator_grid()},
        "layers": {"l": {"grid": "g", "type": "wms", "url": "http://127.0.0.1:9/wms",
                         "layers": "osm"}},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(json.dumps(data))  # YAML reads JSON
    code = (
        "import gc, importlib.machinery, sys\n"
        "seen = {}\n"
        "class Watch:\n"  # notes the collector's state as each module is imported
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('tileserver.cli.generate', 'tileserver.config'):\n"
        "            seen[name] = gc.isenabled()\n"
        "        if name != 'tileserver.cli.generate':\n"
        "            return None\n"
        "        spec = importlib.machinery.PathFinder.find_spec(name, path)\n"
        "        load = spec.loader.exec_module\n"
        "        def exec_module(module):\n"  # then watches its dispatch
        "            load(module)\n"
        "            dispatch = module.dispatch\n"
        "            def watched(ctx):\n"
        "                seen['run'] = (gc.isenabled(), gc.get_freeze_count() > 0)\n"
        "                return dispatch(ctx)\n"
        "            module.dispatch = watched\n"
        "        spec.loader.exec_module = exec_module\n"
        "        return spec\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from tileserver.cli.scripts import generate_tiles\n"
        "sys.argv = ['generate_tiles', '--config', 'config.yaml', '--layer', 'l',\n"
        "            '--get-bbox', '5/10/10']\n"
        "status = generate_tiles()\n"
        "print(status, sorted(seen.items()), gc.isenabled())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == (
        "0 [('run', (True, True)), ('tileserver.cli.generate', False), "
        "('tileserver.config', False)] True"
    ), out.stdout
