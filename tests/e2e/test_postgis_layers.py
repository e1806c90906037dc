"""End to end: a Mapnik layer over a real PostGIS (config/styles/osm-postgis.xml with the
layer's `connection`): PostGIS stopped answers 503 for on-demand tiles while the
pre-generated levels keep being served, and tiles come back when it restarts, without
restarting tileserver; the server also starts while PostGIS is down."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_on_demand import assert_map_tile
from tests.support.app_server import AppServer
from tests.support.configs import MERC, mercator_grid
from tests.support.postgis import PostGIS, load_monaco
from tests.support.schemas import validate_exception_report
from tests.support.server import TileServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STYLE = ROOT / "config" / "styles" / "osm-postgis.xml"
CENTRE = (826800.0, 5425300.0)  # Monaco-Ville, EPSG:3857
SEED_Z = 15  # levels 0..15 are pre-generated, finer ones rendered on demand


@pytest.fixture(scope="module")
def postgis() -> Iterator[PostGIS]:
    server = PostGIS()
    server.start()
    load_monaco(server)
    yield server
    if not server.running:
        server.start()
    server.stop()


def tile(z: int) -> tuple[int, int]:
    """(row, col) of the tile of CENTRE at level z."""
    span = 2 * MERC / 2**z
    return math.floor((MERC - CENTRE[1]) / span), math.floor((CENTRE[0] + MERC) / span)


def path(z: int, row: int, col: int) -> str:
    return f"/wmts/1.0.0/pg/default/epsg3857/{z}/{row}/{col}.png"


def config(postgis: PostGIS, tiles: Path) -> dict[str, Any]:
    grid = mercator_grid()
    return {
        "grids": {"epsg3857": grid},
        "caches": {"local": {"type": "filesystem", "folder": str(tiles)}},
        "layers": {
            "pg": {
                "type": "mapnik",
                "mapfile": str(STYLE),
                "connection": postgis.dsn("monaco"),
                "grid": "epsg3857",
                "cache": "local",
                "min_resolution_seed": grid["resolutions"][SEED_Z],
            }
        },
    }


def test_postgis_down_then_back_without_a_restart(
    postgis: PostGIS, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    data = config(postgis, tmp_path / "tiles")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    row, col = tile(SEED_Z)
    bbox = f"{CENTRE[0] - 100},{CENTRE[1] - 100},{CENTRE[0] + 100},{CENTRE[1] + 100}"
    generated = subprocess.run(
        [sys.executable, "-m", "tileserver", "generate", "--config", str(config_path),
         "--layer", "pg", "--zoom", str(SEED_Z), "--bbox", bbox, "--processes", "1", "-q"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (tmp_path / f"tiles/1.0.0/pg/default/epsg3857/{SEED_Z}/{row}/{col}.png").exists()

    server = tileserver(data)
    z = SEED_Z + 2
    first = server.get(path(z, *tile(z)))
    assert first.status == 200 and first.headers["x-tile-source"] == "render"
    assert_map_tile(first.body)

    postgis.stop(keep_data=True)
    try:
        down = server.get(path(z + 1, *tile(z + 1)))  # a metatile not rendered yet
        assert down.status == 503, down.body[:300]
        assert b"database of layer 'pg' cannot be reached" in down.body
        validate_exception_report(down.body)
        stored = server.get(path(SEED_Z, row, col))
        assert stored.status == 200 and stored.headers["x-tile-source"] == "store"
        assert_map_tile(stored.body)
        # Already rendered tiles are still served from the cache.
        assert server.get(path(z, *tile(z))).headers["x-tile-source"] == "memory"
        ready = server.get("/ready")
        report = json.loads(ready.body)
        assert ready.status == 200 and report["ready"] is True
        assert "renderer" in report["degraded"]
    finally:
        postgis.start()

    back = server.get_until(
        path(z + 1, *tile(z + 1)), lambda a: a.status == 200, "a 200 once PostGIS is back", 30, 0.3
    )
    assert back.status == 200, back.body[:300]
    assert back.headers["x-tile-source"] == "render"
    assert_map_tile(back.body)
    assert server.proc is not None and server.proc.poll() is None  # the same process


def test_server_starts_while_postgis_is_down(
    postgis: PostGIS, app_server: Callable[..., AppServer], tmp_path: Path
) -> None:
    postgis.stop(keep_data=True)
    try:
        server = app_server(config(postgis, tmp_path / "tiles"))
        assert "its database is unavailable" in server.log()
        z = SEED_Z + 3
        down = server.get(path(z, *tile(z)))
        assert down.status == 503 and b"cannot be reached" in down.body
        ready = json.loads(server.get("/ready").body)
        assert ready["ready"] is True and "layers.pg database" in ready["degraded"]
    finally:
        postgis.start()
    back = server.get_until(
        path(z, *tile(z)), lambda a: a.status == 200, "a 200 once PostGIS is back", 30, 0.3
    )
    assert back.status == 200, back.body[:300]
    assert_map_tile(back.body)
    ready = json.loads(server.get("/ready").body)
    assert "layers.pg database" not in ready["degraded"]
