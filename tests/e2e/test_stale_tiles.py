"""End to end: RFC 5861's stale windows of a layer, with a real server, Memcached, PostGIS
and WMS. `stale_while_revalidate` answers an expired tile at once while exactly one
background render (across the server processes) refreshes its metatile;
`stale_if_error` answers the stale tile while the WMS and PostGIS are down, and a 503
once past the window. No error body says where the dependencies are."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from PIL import Image

from tests.e2e.test_shutdown import FILL, STYLE, assert_fill_tile, sleeping_renders
from tests.support.configs import mercator_grid
from tests.support.daemons import Memcached
from tests.support.mapserver import MapServerWMS, monaco_wms
from tests.support.server import Response, TileServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OWS_REPORT = "{http://www.opengis.net/ows/1.1}ExceptionReport"
SLOW = 5.0  # seconds a render of the slow layer takes (its PostGIS query sleeps)
EXPIRES = 4  # seconds, the slow layer's expiry
WAIT = 60.0  # seconds at most for a condition


@pytest.fixture(scope="module")
def wms() -> Iterator[MapServerWMS]:
    with monaco_wms() as server:
        yield server


def hours(seconds: float) -> float:
    return seconds / 3600


def source(answer: Response) -> str:
    return answer.headers.get("x-tile-source", "")


def directives(answer: Response) -> dict[str, int | None]:
    """The Cache-Control directives of an answer: name -> value (None without one)."""
    found: dict[str, int | None] = {}
    for part in answer.headers["cache-control"].split(","):
        name, _, value = part.strip().partition("=")
        found[name] = int(value) if value else None
    return found


def durations_ms(log: str, path_part: str, tile_source: str) -> list[float]:
    """Server-side durations of the access log lines of path_part answered from source."""
    pattern = re.compile(
        r'"GET (\S+)" \d+ \d+ ([\d.]+)ms layer=\S+ zoom=\d+ source=' + re.escape(tile_source)
    )
    return [float(m.group(2)) for m in pattern.finditer(log) if path_part in m.group(1)]


def test_stale_while_revalidate_answers_at_once_while_one_render_refreshes(
    wms: MapServerWMS,
    memcached: Memcached,
    tileserver: Callable[..., TileServer],
    tmp_path: Path,
) -> None:
    style = tmp_path / "slow.xml"
    style.write_text(STYLE.format(fill=",".join(map(str, FILL)), seconds=SLOW))
    config = {
        "grids": {"g": mercator_grid()},
        "memcached": {"servers": [memcached.address], "prefix": "swr/", "retry_interval": 0.5},
        "server": {"render_timeout": 120},
        "layers": {
            "slow": {"type": "mapnik", "grid": "g", "mapfile": str(style),
                     "connection": wms.postgis.connection, "expires": hours(EXPIRES),
                     "stale_while_revalidate": 600},
        },
    }  # fmt: skip
    server = tileserver(config, workers=2)
    postgis = wms.postgis
    # The metatile of 10/300/500 (8 x 8 tiles): rows 296-303, columns 496-503.
    paths = [f"/wmts/1.0.0/slow/default/g/10/{row}/{col}.png"
             for row in (296, 299, 303) for col in (496, 500, 503)]  # fmt: skip
    first = server.get(paths[0])
    assert first.status == 200 and source(first) == "render", first.body[:300]
    assert_fill_tile(first.body)
    control = directives(first)
    assert set(control) == {"public", "max-age", "stale-while-revalidate"}, control
    assert control["stale-while-revalidate"] == 600
    assert control["max-age"] in (EXPIRES - 1, EXPIRES)  # whole seconds left
    fresh = server.get(paths[1])
    # A hit: from the hot tier of the process that rendered it (on by default), or from
    # Memcached in the other one.
    assert source(fresh) in ("hot", "memcached")

    # Once expired, the first request is answered stale and starts the refresh.
    stale = server.get_until(paths[0], lambda a: source(a) == "stale", "a stale answer", WAIT)
    assert stale.status == 200 and source(stale) == "stale", stale.headers
    assert stale.body == first.body
    control = directives(stale)
    assert control["max-age"] == 0  # no promise of freshness
    assert control["stale-while-revalidate"] is not None
    assert 590 < control["stale-while-revalidate"] <= 600
    wait_until(
        lambda: sleeping_renders(postgis) == 1, "the refresh render", timeout=30, interval=0.05
    )

    # While it runs, every tile of the metatile, from either process, is answered stale.
    answers = [server.get(path) for path in paths for _ in range(2)]
    assert sleeping_renders(postgis) == 1, "a second render started"
    assert [source(a) for a in answers] == ["stale"] * len(answers)
    for answer in answers:
        assert answer.status == 200
        assert_fill_tile(answer.body)
    # Server-side times: none waited for the render (5 s, still running above). A busy
    # machine (both cores loaded) holds a process off the CPU for tens of milliseconds now
    # and then, whatever it answers: the typical (median) stale answer is under 20 ms, and
    # every one far below a render. The figures under load are in bench_stale.py.
    served = sorted(durations_ms(server.log(), "/slow/", "stale"))
    assert len(served) >= len(answers) + 1
    assert served[len(served) // 2] < 20, served
    assert served[-1] < 1000, served

    # The refresh lands: fresh tiles again, rendered twice in all (once, then refreshed).
    again = server.get_until(
        paths[0], lambda a: source(a) in ("hot", "memcached"), "the refreshed tile", WAIT
    )
    assert source(again) in ("hot", "memcached"), again.headers
    assert (directives(again)["max-age"] or 0) > 0
    assert server.renders() == 2, server.log()


def png_size(body: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(body))
    image.load()
    assert image.format == "PNG"
    return image.size


def assert_no_whereabouts(body: bytes, secrets: list[str]) -> None:
    """The body is an OWS report that names no host, port, database, user or URL."""
    assert etree.fromstring(body).tag == OWS_REPORT, body[:300]
    text = body.decode()
    leaked = [secret for secret in secrets if secret in text]
    assert not leaked, (leaked, text)


def test_stale_if_error_answers_while_the_wms_and_postgis_are_down(
    wms: MapServerWMS,
    memcached: Memcached,
    tileserver: Callable[..., TileServer],
) -> None:
    postgis = wms.postgis
    dsn = postgis.dsn("monaco")
    expires, window = 2, 8
    config: dict[str, Any] = {
        "grids": {"epsg3857": mercator_grid()},
        "memcached": {"servers": [memcached.address], "prefix": "sie/", "retry_interval": 0.5},
        "upstream": {"retry_backoff": 0.05},
        "layers": {
            "wms": {"type": "wms", "url": wms.url, "layers": "osm", "grid": "epsg3857",
                    "retries": 0},
            "pg": {"type": "mapnik", "grid": "epsg3857",
                   "mapfile": str(ROOT / "config" / "styles" / "osm-postgis.xml"),
                   "connection": dsn},
        },
    }  # fmt: skip
    for layer in config["layers"].values():
        layer.update(expires=hours(expires), stale_if_error=window)
    server = tileserver(config)
    paths = {name: f"/wmts/1.0.0/{name}/default/epsg3857/17/47790/68240.png"
             for name in ("wms", "pg")}  # fmt: skip
    rendered = {}
    for name, path in paths.items():
        answer = server.get(path)
        assert answer.status == 200 and source(answer) == "render", answer.body[:300]
        assert png_size(answer.body) == (256, 256)
        control = directives(answer)
        assert set(control) == {"public", "max-age", "stale-if-error"}, control
        assert control["max-age"] in (expires - 1, expires)
        assert control["stale-if-error"] == window
        rendered[name] = answer.body

    wms.stop(keep_files=True)
    postgis.stop(keep_data=True)
    try:
        for name, path in paths.items():
            stale = server.get_until(
                path, lambda a: source(a) == "stale", f"layer {name} stale", WAIT
            )
            assert stale.status == 200 and source(stale) == "stale", (name, stale.body[:300])
            assert stale.body == rendered[name]
            control = directives(stale)
            assert control["max-age"] == 0 and 0 <= (control["stale-if-error"] or 0) < window
        # Past the window: the error, which says what failed but not where it is.
        secrets = [dsn, "127.0.0.1", str(postgis.port), str(wms.port), "monaco",
                   "user=", "postgres", wms.url]  # fmt: skip
        gone = {
            name: server.get_until(path, lambda a: a.status != 200, f"layer {name} failing", WAIT)
            for name, path in paths.items()
        }
        assert gone["wms"].status == 503, gone["wms"].body[:300]
        assert b"The WMS of layer 'wms' cannot be reached" in gone["wms"].body
        assert gone["pg"].status == 503, gone["pg"].body[:300]
        assert b"the database of layer 'pg' cannot be reached" in gone["pg"].body
        for answer in gone.values():
            assert_no_whereabouts(answer.body, secrets)
        # The details are for the operator: the log says where.
        log = server.log()
        assert f"127.0.0.1:{wms.port}" in log and str(postgis.port) in log
    finally:
        postgis.start()
        wms.start()
    back = server.get_until(paths["pg"], lambda a: source(a) == "render", "pg rendered again", WAIT)
    assert back.status == 200 and source(back) == "render", back.body[:300]
