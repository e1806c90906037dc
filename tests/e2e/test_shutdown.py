"""End to end: SIGTERM stops a real `tileserver serve` (1 or 2 server processes) gracefully.
It stops accepting connections at once, lets a request waiting for a render finish within
`server.shutdown_timeout`, and exits 0. A render longer than that does not hold the exit
beyond the grace period and a small margin.

Renders are made slow on purpose: a Mapnik style over a real PostGIS whose query sleeps
(`pg_sleep`) at render time only, so a tile takes as long as the test needs, and the test
knows a render is under way when PostgreSQL shows the sleeping query."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image

from tests.e2e.test_operations import _render_processes
from tests.support.configs import mercator_grid
from tests.support.postgis import PostGIS
from tests.support.server import Response, TileServer, fetch
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

FILL = (200, 50, 50)  # the colour of the slow style's one polygon, which covers the world
# Mapnik replaces !scale_denominator! with 0 when it loads the style (LIMIT 0 query) and
# with the real scale at render time: only renders sleep.
STYLE = """<Map srs="epsg:3857" background-color="white">
  <Style name="fill"><Rule><PolygonSymbolizer fill="rgb({fill})"/></Rule></Style>
  <Layer name="slow" srs="epsg:3857">
    <StyleName>fill</StyleName>
    <Datasource>
      <Parameter name="type">postgis</Parameter>
      <Parameter name="table">(SELECT ST_MakeEnvelope(-2e7, -2e7, 2e7, 2e7, 3857) AS geom
        FROM pg_sleep(CASE WHEN !scale_denominator! &gt; 0 THEN {seconds} ELSE 0 END)) AS t
      </Parameter>
      <Parameter name="geometry_field">geom</Parameter>
      <Parameter name="srid">3857</Parameter>
      <Parameter name="extent">-20037508,-20037508,20037508,20037508</Parameter>
    </Datasource>
  </Layer>
</Map>
"""
SLOW = 6.0  # seconds a render of layer `slow` takes
STUCK = 60.0  # ... of layer `stuck`: longer than any grace period here
CLOSE_MARGIN = 5.0  # tileserver.cli.serve.CLOSE_MARGIN
SLEEPING = "state = 'active' AND query LIKE '%pg_sleep(CASE%' AND pid <> pg_backend_pid()"


@pytest.fixture(scope="module")
def postgis() -> Iterator[PostGIS]:
    server = PostGIS()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_render_left(postgis: PostGIS) -> Iterator[None]:
    """A render query whose server is gone keeps sleeping in PostgreSQL: end it, so that
    the next test counts its own."""
    yield
    with psycopg.connect(postgis.connection, autocommit=True) as conn:
        conn.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {SLEEPING}"
        ).fetchall()


def slow_config(postgis: PostGIS, folder: Path, grace: float) -> dict[str, Any]:
    layers = {}
    for name, seconds in (("slow", SLOW), ("stuck", STUCK)):
        style = folder / f"{name}.xml"
        style.write_text(STYLE.format(fill=",".join(map(str, FILL)), seconds=seconds))
        layers[name] = {"type": "mapnik", "grid": "g", "mapfile": str(style),
                        "connection": postgis.connection}  # fmt: skip
    return {
        "grids": {"g": mercator_grid()},
        "server": {"shutdown_timeout": grace, "render_timeout": 120},
        "layers": layers,
    }


def tile_path(layer: str, col: int = 500) -> str:
    return f"/wmts/1.0.0/{layer}/default/g/10/300/{col}.png"


class InFlight(threading.Thread):
    """One GET in a thread: its answer, or the error that ended it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.response: Response | None = None
        self.error: OSError | None = None
        self.start()

    def run(self) -> None:
        try:
            self.response = fetch(self.url, timeout=120)
        except OSError as exc:
            self.error = exc


def sleeping_renders(postgis: PostGIS) -> int:
    """Render queries PostgreSQL is running now (the slow style's pg_sleep)."""
    with psycopg.connect(postgis.connection, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {SLEEPING}").fetchone()
    return int(row[0]) if row else 0


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def assert_fill_tile(body: bytes) -> None:
    image = Image.open(io.BytesIO(body))
    image.load()
    assert image.format == "PNG" and image.size == (256, 256)
    colours = image.convert("RGB").getcolors(maxcolors=16)
    assert colours == [(256 * 256, FILL)], colours


def children(pid: int) -> list[int]:
    """The server processes a master started (their command line has --reuse-port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == pid and b"--reuse-port" in cmdline:
            found.append(int(entry.name))
    return found


def signal_during_a_render(
    postgis: PostGIS, server: TileServer, layer: str, send: Callable[[], None] | None = None
) -> tuple[InFlight, float]:
    """Requests a cold tile of layer, sends SIGTERM to the server (or calls `send`) once its
    render is under way, and checks that new connections are refused while it is; the
    request, and when the signal was sent."""
    assert server.proc is not None
    request = InFlight(server.base + tile_path(layer))
    wait_until(lambda: sleeping_renders(postgis) == 1, "the render under way", detail=server.log)
    sent = time.monotonic()
    if send is None:
        server.proc.send_signal(signal.SIGTERM)
    else:
        send()
    # Refused while the render (SLOW seconds) is still under way: no new connection.
    assert wait_until(lambda: refused(server.port), "the port closed")
    assert request.is_alive(), "the render was not under way any more"
    return request, sent


def test_sigterm_lets_the_render_under_way_finish_then_exits_0(
    postgis: PostGIS, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    server = tileserver(slow_config(postgis, tmp_path, grace=30))
    assert server.proc is not None
    request, sent = signal_during_a_render(postgis, server, "slow")

    request.join(60)
    assert request.error is None and request.response is not None, request.error
    assert request.response.status == 200
    assert request.response.headers["x-tile-source"] == "render"
    assert_fill_tile(request.response.body)
    assert server.proc.wait(30) == 0
    assert time.monotonic() - sent < SLOW + 10  # the render's time, not the grace's (30 s)
    log = server.log()
    assert "SIGTERM: stopping: no new connections; 1 request(s) under way" in log
    assert log.rstrip().endswith("tileserver.server: stopped"), log[-2000:]
    assert "Traceback" not in log


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["sigterm-to-the-master", "ctrl-c"])
def test_two_workers_stop_gracefully(
    postgis: PostGIS, tileserver: Callable[..., TileServer], tmp_path: Path, ctrl_c: bool
) -> None:
    """SIGTERM to the master, which forwards it; or Ctrl-C in a terminal, which sends
    SIGINT to the master and its workers (each worker then gets it twice: the second
    must not cut the grace period short)."""
    server = tileserver(slow_config(postgis, tmp_path, grace=30), workers=2)
    proc = server.proc
    assert proc is not None
    workers = children(proc.pid)
    assert len(workers) == 2

    def interrupt() -> None:
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        # The master's copy comes second, once each worker has handled its own (sent at
        # once, the two could be merged into one pending signal).
        wait_until(lambda: server.log().count("SIGINT: stopping") == 2, "the workers' SIGINT")
        os.kill(proc.pid, signal.SIGINT)

    request, sent = signal_during_a_render(postgis, server, "slow", interrupt if ctrl_c else None)
    request.join(60)
    assert request.response is not None and request.response.status == 200, request.error
    assert_fill_tile(request.response.body)
    assert proc.wait(30) == 0
    assert time.monotonic() - sent < SLOW + 10
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    log = server.log()
    name = "SIGINT" if ctrl_c else "SIGTERM"
    assert log.count(f"{name}: stopping: no new connections") == 2  # each worker's
    busy = re.search(r"\[(\d+)\] WARNING tileserver.server: \w+: stopping: no new connections; "
                     r"1 request\(s\) under way", log)  # fmt: skip
    assert busy is not None, log
    assert (f"[{busy[1]}] WARNING tileserver.server: SIGINT: already stopping" in log) == ctrl_c
    assert log.count("tileserver.server: stopped") == 2
    assert "Traceback" not in log


def test_a_render_longer_than_the_grace_period_does_not_hold_the_exit(
    postgis: PostGIS, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    grace = 2.0
    server = tileserver(slow_config(postgis, tmp_path, grace=grace))
    assert server.proc is not None
    render_processes = _render_processes(server.proc.pid)
    assert render_processes
    request, sent = signal_during_a_render(postgis, server, "stuck")

    assert server.proc.wait(STUCK) == 0
    elapsed = time.monotonic() - sent
    # After the grace period, and far below the render's STUCK seconds (not held by it).
    assert grace - 0.5 < elapsed < STUCK / 2, elapsed
    # The request was cut (no answer), and the render process stopped with the server.
    request.join(10)
    assert request.response is None and isinstance(request.error, OSError)
    assert not any(Path(f"/proc/{pid}").exists() for pid in render_processes)
    log = server.log()
    assert "terminating 1 render process(es)" in log
    assert log.rstrip().endswith("tileserver.server: stopped"), log[-2000:]
    assert "Traceback" not in log  # the cancelled render is not reported as a failure
