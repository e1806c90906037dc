"""End to end: the render processes of `tileserver serve` (one process, or a master and its
workers) and of `generate_tiles` die with them when they are killed by SIGKILL (as the OOM
killer does): nothing is left behind, orphaned, holding Mapnik's memory."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_generate_tiles import command, write_config
from tests.support.processes import alive, descendants, render_processes
from tests.support.server import TileServer, demo_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

GONE_WITHIN = 5.0  # seconds after the kill


def assert_all_gone(pids: list[int], what: str) -> None:
    wait_until(
        lambda: not any(alive(p) for p in pids),
        f"{what} gone",
        timeout=GONE_WITHIN,
        interval=0.05,
        detail=lambda: f"still alive: {[p for p in pids if alive(p)]}",
    )


def test_render_processes_die_with_a_killed_server(
    tileserver: Callable[..., TileServer],
) -> None:
    server = tileserver(demo_config(None), render_processes=2)
    assert server.proc is not None
    renderers = render_processes(server.proc.pid)
    assert len(renderers) == 2, renderers
    everything = descendants(server.proc.pid)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    assert_all_gone(everything, "the render processes of a server killed by SIGKILL")


def test_workers_and_their_render_processes_die_with_a_killed_master(
    tileserver: Callable[..., TileServer],
) -> None:
    server = tileserver(demo_config(None), workers=2, render_processes=2)
    assert server.proc is not None
    master = server.proc.pid
    wait_until(
        lambda: len(render_processes(master)) == 4,
        "four render processes",
        timeout=30,
        interval=0.05,
        detail=lambda: descendants(master),
    )
    everything = descendants(master)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    assert_all_gone(everything, "the workers of a master killed by SIGKILL")


def test_render_processes_die_with_a_killed_generate_tiles(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    config = write_config(tmp_path, {"cache": "tiles", "meta_size": 1})
    process = subprocess.Popen(
        command(config, "--layer", "osm", "--zoom", "13-17", "--processes", "2"),
        cwd=config.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    started.append(process)
    wait_until(
        lambda: len(render_processes(process.pid)) == 2,
        "the render pool",
        timeout=60,
        interval=0.05,
    )
    # Rendering under way: tiles are being written.
    wait_until(
        lambda: any((tmp_path / "tiles").rglob("*.png")),
        "a tile written",
        timeout=60,
        interval=0.05,
    )
    everything = descendants(process.pid)
    os.kill(process.pid, signal.SIGKILL)  # the generation alone, not its process group
    process.wait()
    assert_all_gone(everything, "the render processes of generate_tiles killed by SIGKILL")
