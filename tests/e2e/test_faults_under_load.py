"""Faults while a load runs: a few clients hammer a mix of Memcached hits, pre-generated
tiles (a folder or an S3 store) and tiles rendered on demand, while a dependency fails
and comes back. Every answer is checked: during the fault each one is a 200 with a
decodable 256 px PNG (the planted bytes for a stored tile) or an OWS ExceptionReport
with the status the fault calls for (503, 504), never a 500, and none takes longer than
a bound (no hang); after the dependency is back every answer is a 200 again within a
bound, from the source it came from before the fault.

Faults: Memcached killed and restarted; Memcached flushed; the S3 server killed and
restarted; the upstream WMS slow, then down; PostGIS stopped and started; a Mapnik render
process killed while requests wait on it.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lxml import etree
from PIL import Image

from tests.support.configs import mercator_grid
from tests.support.daemons import Memcached
from tests.support.images import plant, planted_png
from tests.support.mapserver import MapServerWMS, monaco_wms
from tests.support.s3 import SeaweedS3
from tests.support.schemas import validate_exception_report
from tests.support.server import TileServer, demo_config
from tests.support.waiting import wait_until
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.adapters.s3_store import S3Store
from tileserver.protocols import TileStore
from tileserver.store_layout import tile_path

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OWS_REPORT = "{http://www.opengis.net/ows/1.1}ExceptionReport"
SEED = 4.77  # min_resolution_seed: z15 (4.777 m) and coarser come from the store

# Tiles of the demo layer `osm` (grid epsg3857) over Monaco, as (z, row, col).
STORED = [(15, row, col) for row in (11946, 11947, 11948) for col in (17059, 17060, 17061)]
CACHED = [(16, row, col) for row in (23894, 23895) for col in (34120, 34121)]  # one metatile
ON_DEMAND = [(17, 47790, 68240), (17, 47786, 68244), (17, 47790, 68239), (17, 47782, 68235),
             (18, 95580, 136480), (18, 95590, 136470)]  # fmt: skip

CLIENTS = 4
PACE = 0.02  # seconds from one request of a client to its next, at least
HANG = 15.0  # seconds: an answer slower than this, in any phase, is a hang
PHASE = 2.5  # seconds of load before a fault, and during it
RECOVERY = 20.0  # seconds for every answer to be a 200 again once the dependency is back
RENDERED = ("cached", "on_demand")  # the kinds of tile rendered again after a flush


def rest(layer: str, z: int, row: int, col: int) -> str:
    return f"/wmts/1.0.0/{layer}/default/epsg3857/{z}/{row}/{col}.png"


def store_path(layer: str, z: int, row: int, col: int) -> str:
    return tile_path("", layer, "default", (), "epsg3857", str(z), row, col, "png")


def plant_stored(store: TileStore, layer: str) -> dict[str, bytes]:
    """Plants a tile of its own colour for every STORED tile; by REST path."""
    tiles = {rest(layer, *t): planted_png((200, 40 + 20 * i, 90)) for i, t in enumerate(STORED)}
    plant(store, {store_path(layer, *t): tiles[rest(layer, *t)] for t in STORED})
    return tiles


# --- the load -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # the URL set: stored | cached | on_demand | ...
    path: str
    started: float  # time.monotonic() when sent
    seconds: float  # until the whole answer was read (or the request failed)
    status: int  # 0: no answer (connection error, client timeout)
    source: str  # X-Tile-Source
    problem: str  # "" when the answer is well-formed for its status
    body: bytes  # error answers only, for schema validation

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.problem


def check_answer(status: int, content_type: str, body: bytes, expected: bytes | None) -> str:
    """What is wrong with an answer, "" if nothing: a 200 is a 256 px PNG (the planted one
    for a stored tile); an error is an OWS ExceptionReport."""
    if status == 200:
        if content_type != "image/png":
            return f"200 with Content-Type {content_type}"
        try:
            image = Image.open(io.BytesIO(body))
            image.load()
        except Exception as exc:
            return f"200 with a body that is not an image: {exc}"
        if (image.format, image.size) != ("PNG", (256, 256)):
            return f"200 with a {image.format} of {image.size}"
        if expected is not None and body != expected:
            return "200 with other bytes than the stored tile"
        return ""
    if not content_type.startswith("application/xml"):
        return f"{status} with Content-Type {content_type}"
    try:
        root = etree.fromstring(body)
    except etree.XMLSyntaxError as exc:
        return f"{status} with a body that is not XML: {exc}"
    return "" if root.tag == OWS_REPORT else f"{status} with a {root.tag} document"


class Load:
    """CLIENTS tasks, in a thread, each asking for the next path of `paths` once it has
    read the previous answer and PACE s have passed since it asked, until the load stops;
    every answer is recorded. A steady load (up to CLIENTS / PACE requests a second, with
    CLIENTS always under way), not a saturating one: the faults are the subject, and a
    saturating load would take a core from the rest of the suite."""

    def __init__(
        self,
        base: str,
        paths: Sequence[tuple[str, str]],
        expected: dict[str, bytes] | None = None,
        clients: int = CLIENTS,
    ) -> None:
        self.base = base
        # (kind, path), the kinds interleaved: a client stuck on slow answers of one kind
        # still asks for the others in turn.
        rank = Counter[str]()
        ranked = []
        for kind, path in paths:
            ranked.append((rank[kind], kind, path))
            rank[kind] += 1
        self.paths = [(kind, path) for _, kind, path in sorted(ranked)]
        self.expected = expected or {}
        self.clients = clients
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pending: dict[int, tuple[float, str]] = {}  # client: (when sent, kind) in flight
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HANG + 10)
        assert not self._thread.is_alive(), "the load did not stop: a request hangs"

    def answers(self, since: float = 0.0, until: float = float("inf")) -> list[Answer]:
        """The answers to the requests sent between since and until (monotonic times)."""
        with self._lock:
            return [a for a in self._answers if since <= a.started < until]

    def during(self, start: float, end: float) -> list[Answer]:
        """The answers to the requests sent from `start` on and read before `end`."""
        with self._lock:
            return [a for a in self._answers if a.started >= start and a.started + a.seconds < end]

    def overlapping(self, start: float, end: float) -> list[Answer]:
        """The answers whose request was under way at some time between start and end."""
        with self._lock:
            return [a for a in self._answers if a.started < end and a.started + a.seconds > start]

    def oldest_pending(self) -> float:
        """When the oldest request still waiting for its answer was sent (inf: none)."""
        with self._lock:
            return min((sent for sent, _ in self._pending.values()), default=float("inf"))

    def pending_since(self, *kinds: str) -> float:
        """When the oldest request of one of `kinds` still waiting for its answer was sent
        (inf: none)."""
        with self._lock:
            pending = self._pending.values()
            return min((sent for sent, k in pending if k in kinds), default=float("inf"))

    def before(self, fault: float) -> list[Answer]:
        """The answers read before `fault` (a request sent before it may see it)."""
        with self._lock:
            return [a for a in self._answers if a.started + a.seconds < fault]

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=HANG + 5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession, index: int) -> None:
        # Each client starts at its own place in the list and walks it.
        step = index * len(self.paths) // self.clients
        while not self._stop.is_set():
            kind, path = self.paths[step % len(self.paths)]
            step += 1
            with self._lock:
                started = time.monotonic()
                self._pending[index] = (started, kind)
            status, source, content_type, body, failure = 0, "", "", b"", ""
            try:
                async with session.get(self.base + path) as response:
                    body = await response.read()
                    status = response.status
                    source = response.headers.get("X-Tile-Source", "")
                    content_type = response.headers.get("Content-Type", "")
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = f"no answer: {type(exc).__name__} {exc}"
            seconds = time.monotonic() - started
            problem = failure or check_answer(status, content_type, body, self.expected.get(path))
            answer = Answer(kind, path, started, seconds, status, source, problem,
                            body if status != 200 else b"")  # fmt: skip
            with self._lock:
                self._answers.append(answer)
                del self._pending[index]
            await asyncio.sleep(max(PACE - seconds, 0.0))


def describe(answers: Sequence[Answer]) -> str:
    counts = Counter(
        (a.kind, a.status, a.source, a.problem[:80], "slow" if a.seconds > HANG else "")
        for a in answers
    )
    return "; ".join(f"{n} x {key}" for key, n in counts.most_common(12))


def assert_answers(
    answers: Sequence[Answer], allowed: set[int], what: str, within: float = HANG
) -> None:
    """Every answer has an allowed status, is well-formed, and came within `within` s."""
    assert answers, f"{what}: no answer at all"
    bad = [a for a in answers if a.status not in allowed or a.problem or a.seconds > within]
    assert not bad, f"{what}: {len(bad)} of {len(answers)} answers wrong: {describe(bad)}"
    slowest = max(a.seconds for a in answers)
    assert slowest <= within, f"{what}: an answer took {slowest:.1f} s"


def wait_recovered(
    load: Load,
    since: float,
    what: str,
    window: float = 2.0,
    condition: Callable[[list[Answer]], bool] = lambda _: True,
) -> float:
    """Waits until every answer of the last `window` seconds is a good 200, every kind
    of path among them, and `condition` holds for them; when that window started. Fails
    RECOVERY seconds after `since`."""
    kinds = {kind for kind, _ in load.paths}
    recent: list[Answer] = []
    starts: list[float] = []

    def recovered() -> bool:
        now = time.monotonic()
        start = max(since, now - window)
        recent[:] = load.answers(start, now)
        if (
            now - since >= window
            and recent
            and all(a.ok for a in recent)
            and {a.kind for a in recent} == kinds
            and condition(recent)
            and load.oldest_pending() > now - 1.0  # none of the window's requests is slow
        ):
            starts.append(start)
        return bool(starts)

    wait_until(
        recovered,
        f"{what}: recovered within {RECOVERY:g} s",
        max(0.0, since + RECOVERY - time.monotonic()),  # RECOVERY counts from `since`
        0.2,
        detail=lambda: describe(recent),
    )
    return starts[0]


def sources(answers: Sequence[Answer], kind: str) -> set[str]:
    return {a.source for a in answers if a.kind == kind}


def validate_errors(answers: Sequence[Answer]) -> None:
    """The error answers, one of each status, against the OWS schema."""
    for status in sorted({a.status for a in answers if a.status >= 400}):
        validate_exception_report(next(a.body for a in answers if a.status == status))


def osm_paths() -> list[tuple[str, str]]:
    paths = [("stored", rest("osm", *t)) for t in STORED]
    paths += [("cached", rest("osm", *t)) for t in CACHED]
    paths += [("on_demand", rest("osm", *t)) for t in ON_DEMAND]
    return paths


def folder_config(memcached: Memcached, folder: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The demo config, `osm` with a folder store under z15; the planted tiles."""
    config = demo_config(memcached.address, osm={"cache": "tiles", "min_resolution_seed": SEED})
    config["caches"] = {"tiles": {"type": "filesystem", "folder": str(folder)}}
    return config, plant_stored(FilesystemStore(folder), "osm")


def warm(server: TileServer) -> None:
    for z, row, col in CACHED[:1]:
        assert server.get(rest("osm", z, row, col)).status == 200


# --- Memcached ------------------------------------------------------------------------------


def test_memcached_killed_then_restarted_under_load(
    memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    config, planted = folder_config(memcached, tmp_path / "tiles")
    server = tileserver(config, workers=2)
    warm(server)
    with Load(server.base, osm_paths(), planted) as load:
        time.sleep(PHASE)
        killed = time.monotonic()
        memcached.kill()
        time.sleep(PHASE)
        restarted = time.monotonic()
        memcached.start()  # the same port
        back = wait_recovered(
            load, restarted, "memcached restarted",
            condition=lambda recent: sources(recent, "cached") == {"memcached"},
        )  # fmt: skip
        time.sleep(1)
    before = load.before(killed)
    assert_answers(before, {200}, "before the kill")
    assert sources(before, "cached") == {"memcached"}
    # Down: every tile is still served, rendered once per process...
    down = load.during(killed, restarted)
    assert_answers(down, {200}, "memcached down")
    # ... and kept in the in-process cache meanwhile.
    assert sources(load.answers(killed + 1, restarted), "cached") <= {"render", "coalesced",
                                                                       "memory"}  # fmt: skip
    assert_answers(load.answers(restarted), {200}, "after the restart")
    assert sources(load.answers(back), "stored") == {"store"}
    assert_answers(load.answers(), {200}, "the whole run")
    log = server.log()
    assert "memcached is back" in log
    # One warning per outage and server process, not one per request.
    assert 1 <= log.count("memcached unavailable") <= 2, log


def test_memcached_flushed_under_load(
    memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    config, planted = folder_config(memcached, tmp_path / "tiles")
    server = tileserver(config, workers=2)
    warm(server)
    with Load(server.base, osm_paths(), planted) as load:
        time.sleep(PHASE)
        renders = server.renders()
        flushed = time.monotonic()
        memcached.flush_all()
        wait_recovered(
            load, flushed, "flushed",
            condition=lambda recent: sources(recent, "cached") == {"memcached"}
            and sources(recent, "on_demand") == {"memcached"},
        )  # fmt: skip
    answers = load.answers()
    assert_answers(answers, {200}, "around the flush")
    after = load.answers(flushed)
    assert "render" in sources(after, "cached") | sources(after, "on_demand")
    # Rendered again once per metatile (and process), not once per request.
    again = server.renders() - renders
    metatiles = len({(z, r // 8, c // 8) for z, r, c in CACHED + ON_DEMAND})
    assert metatiles <= again <= 2 * metatiles, (again, metatiles)
    assert "memcached unavailable" not in server.log()


# --- S3 -------------------------------------------------------------------------------------


def test_s3_killed_then_restarted_under_load(
    memcached: Memcached,
    tileserver: Callable[..., TileServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3 = SeaweedS3()
    s3.start()
    try:
        for name, value in SeaweedS3.env().items():
            monkeypatch.setenv(name, value)
        planted = plant_stored(S3Store(s3.bucket, "pregen", endpoint_url=s3.endpoint_url), "osm")
        config = demo_config(memcached.address, osm={"cache": "s3", "min_resolution_seed": SEED})
        config["caches"] = {"s3": {"type": "s3", "bucket": s3.bucket, "folder": "pregen",
                                   "endpoint_url": s3.endpoint_url}}  # fmt: skip
        server = tileserver(config, env=SeaweedS3.env())
        warm(server)
        with Load(server.base, osm_paths(), planted) as load:
            time.sleep(PHASE)
            killed = time.monotonic()
            s3.kill()
            time.sleep(PHASE)
            restarted = time.monotonic()
            s3.restart()
            back = wait_recovered(
                load, restarted, "S3 restarted",
                condition=lambda recent: sources(recent, "stored") == {"store"},
            )  # fmt: skip
            time.sleep(1)
        assert_answers(load.before(killed), {200}, "before the kill")
        down = load.during(killed + 0.5, restarted)
        # The pre-generated levels answer 503 quickly; the others do not need S3.
        assert_answers([a for a in down if a.kind == "stored"], {503}, "S3 down", within=5)
        assert_answers([a for a in down if a.kind != "stored"], {200}, "S3 down, other levels")
        assert_answers(load.answers(killed, back), {200, 503}, "S3 down or coming back", 5)
        validate_errors(down)
        assert b"The tile store is unavailable" in next(a.body for a in down if a.status == 503)
        assert_answers(load.answers(back), {200}, "after the restart")
        assert_answers(load.answers(), {200, 503}, "the whole run")
    finally:
        s3.stop()


# --- the WMS and PostGIS --------------------------------------------------------------------


@pytest.fixture(scope="module")
def wms() -> Iterator[MapServerWMS]:
    with monaco_wms() as server:
        yield server


def upstream_config(wms: MapServerWMS, memcached: Memcached, folder: Path) -> dict[str, Any]:
    """A WMS layer, a Mapnik layer over the same PostGIS, and a layer pre-generated in a
    folder store: what a fault of the WMS or the database must not touch."""
    return {
        "grids": {"epsg3857": mercator_grid()},
        "memcached": {"servers": [memcached.address], "prefix": "t/", "retry_interval": 0.5},
        "upstream": {"retry_backoff": 0.05},
        "caches": {"tiles": {"type": "filesystem", "folder": str(folder)}},
        "layers": {
            "wms": {"type": "wms", "url": wms.url, "layers": "osm", "grid": "epsg3857",
                    "timeout": 3, "retries": 0},
            "pg": {"type": "mapnik", "grid": "epsg3857",
                   "mapfile": str(ROOT / "config" / "styles" / "osm-postgis.xml"),
                   "connection": wms.postgis.dsn("monaco")},
            "osm": {"type": "mapnik", "grid": "epsg3857",
                    "mapfile": str(ROOT / "config" / "styles" / "osm.xml"),
                    "cache": "tiles", "min_resolution_seed": SEED},
        },
    }  # fmt: skip


def upstream_paths(layer: str) -> list[tuple[str, str]]:
    """The tiles of `layer` rendered on demand, and the osm layer's stored and cached."""
    paths = [("stored", rest("osm", *t)) for t in STORED]
    paths += [("cached", rest("osm", *t)) for t in CACHED]
    paths += [(layer, rest(layer, *t)) for t in ON_DEMAND[:4]]
    return paths


def test_wms_slow_then_down_under_load(
    wms: MapServerWMS, memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    folder = tmp_path / "tiles"
    planted = plant_stored(FilesystemStore(folder), "osm")
    server = tileserver(upstream_config(wms, memcached, folder))
    warm(server)
    with Load(server.base, upstream_paths("wms"), planted) as load:
        time.sleep(PHASE)
        slow = time.monotonic()
        wms.set_mode("slow:10")
        memcached.flush_all()  # the WMS tiles are asked of the WMS again
        # Until a WMS tile has timed out: once the hot tier's copies are past their max-age
        # (2 s), the layer's timeout (3 s) after a request that reached the WMS.
        wait_until(lambda: any(a.kind == "wms" and a.status == 504 for a in load.answers(slow)),
                   "a WMS tile answered 504 while the WMS is slow",
                   detail=lambda: Counter(a.status for a in load.answers(slow)))  # fmt: skip
        stopped = time.monotonic()
        wms.set_mode("normal")
        wms.stop(keep_files=True)
        time.sleep(PHASE)
        restarted = time.monotonic()
        wms.start()
        back = wait_recovered(load, restarted, "WMS restarted")
    assert_answers(load.before(slow), {200}, "before the fault")
    timed_out = load.during(slow, stopped)
    # Slow: 504 after the layer's timeout (3 s), never a wait for the WMS's 10 s.
    assert_answers([a for a in timed_out if a.kind == "wms"], {200, 504}, "WMS slow", within=5)
    assert 504 in {a.status for a in timed_out}
    refused = load.during(stopped + 0.5, restarted)
    assert_answers([a for a in refused if a.kind == "wms"], {200, 503}, "WMS down", within=5)
    assert 503 in {a.status for a in refused}
    others = [a for a in load.answers(slow, restarted) if a.kind != "wms"]
    assert_answers(others, {200}, "WMS slow or down, other layers")
    validate_errors(load.answers())
    assert_answers(load.answers(back), {200}, "after the restart")
    assert_answers(load.answers(), {200, 503, 504}, "the whole run")


def test_postgis_stopped_then_started_under_load(
    wms: MapServerWMS, memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    folder = tmp_path / "tiles"
    planted = plant_stored(FilesystemStore(folder), "osm")
    server = tileserver(upstream_config(wms, memcached, folder))
    warm(server)
    postgis = wms.postgis
    with Load(server.base, upstream_paths("pg"), planted) as load:
        time.sleep(PHASE)
        stopped = time.monotonic()
        postgis.stop(keep_data=True)
        memcached.flush_all()  # the pg tiles are rendered again, from the database
        time.sleep(PHASE)
        restarted = time.monotonic()
        postgis.start()
        back = wait_recovered(load, restarted, "PostGIS restarted")
    assert_answers(load.before(stopped), {200}, "before the fault")
    down = load.during(stopped + 0.5, restarted)
    assert_answers([a for a in down if a.kind == "pg"], {200, 503}, "PostGIS down", within=5)
    assert 503 in {a.status for a in down if a.kind == "pg"}
    assert b"database of layer 'pg' cannot be reached" in next(a.body for a in down
                                                             if a.status == 503)  # fmt: skip
    assert_answers([a for a in down if a.kind != "pg"], {200}, "PostGIS down, other layers")
    validate_errors(down)
    assert_answers(load.answers(back), {200}, "after the restart")
    assert_answers(load.answers(), {200, 503}, "the whole run")


# --- a render process killed ----------------------------------------------------------------


def render_processes(server_pid: int) -> list[int]:
    """The Mapnik render processes of a one-process server: its children started by
    multiprocessing's spawn (not its resource tracker)."""
    pids: set[int] = set()
    for children in Path(f"/proc/{server_pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.add(int(pid))
            except FileNotFoundError:
                continue
    return sorted(pids)


def two_render_processes(
    memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> tuple[TileServer, dict[str, bytes], list[int]]:
    """A one-process server with two render processes, warm: it, the planted tiles, the
    render processes' PIDs."""
    config, planted = folder_config(memcached, tmp_path / "tiles")
    server = tileserver(config, workers=1, render_processes=2)
    assert server.proc is not None
    renderers = render_processes(server.proc.pid)
    assert len(renderers) == 2, renderers
    warm(server)
    return server, planted, renderers


def wait_rebuilt(load: Load, server: TileServer, killed: float) -> float:
    """Waits until the server has said its render pool broke, and every answer is good
    again (wait_recovered): when the good window started."""
    return wait_recovered(
        load, killed, "render pool rebuilt",
        condition=lambda _: "render pool broken" in server.log(),
    )  # fmt: skip


def assert_rebuilt(load: Load, server: TileServer, around: Sequence[Answer], back: float) -> None:
    """After a render pool broke under load: the error answers `around` it well-formed,
    every answer since `back` a 200, none but 200 and 503 in the whole run, and the break
    in the log."""
    validate_errors(around)
    assert_answers(load.answers(back), {200}, "after the rebuild")
    assert_answers(load.answers(), {200, 503}, "the whole run")
    assert "render pool broken" in server.log()


def test_render_process_killed_under_load(
    memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    server, planted, renderers = two_render_processes(memcached, tileserver, tmp_path)
    assert server.proc is not None
    with Load(server.base, osm_paths(), planted) as load:
        time.sleep(PHASE)
        flushed = time.monotonic()
        memcached.flush_all()  # every tile not stored is rendered again...
        time.sleep(0.3)
        os.kill(renderers[0], signal.SIGKILL)  # ...and some wait on this process
        killed = time.monotonic()
        # A metatile renders in a few tens of ms: those of the flush may all be done before
        # the kill. Flushing again makes the server render after the death whatever the
        # machine's speed, so a render meets the dead process and the pool is rebuilt.
        memcached.flush_all()
        back = wait_rebuilt(load, server, killed)
    assert_answers(load.before(flushed), {200}, "before the kill")
    # Requests that waited on the dead process got an answer: a tile, rendered again by
    # the rebuilt pool, or a 503 if that failed too.
    # Every answer under way from the flush to the recovery: on a busy machine a request
    # sent before the flush may still be waiting for its render at the kill.
    around = load.overlapping(flushed, back)
    assert_answers(around, {200, 503}, "render process killed")
    # The render that met the dead process was asked for by a request sent after the kill
    # (the second flush) and answered above; whether some request was also under way at
    # the very instant of the kill is the machine's timing, not the server's behaviour.
    after = [a for a in load.answers(killed) if a.kind in ("cached", "on_demand")]
    assert after, "no request needing a render after the kill"
    assert_rebuilt(load, server, around, back)
    # A new pool: its processes start as renders need them.
    now = render_processes(server.proc.pid)
    assert now and renderers[0] not in now, (renderers, now)
    assert server.proc.poll() is None


def test_render_processes_frozen_then_one_killed_under_load(
    memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    """Both render processes frozen (SIGSTOP: a debugger, a cgroup freeze, a machine
    swapping) with renders waiting on them, then one killed (the OOM killer) and the other
    continued: every request gets an answer, the pool is rebuilt. Whatever each process
    was doing when frozen (idle, rendering, sending its result), no render is left
    waiting on the dead pool (see adapters/pool_faults.py)."""
    server, planted, renderers = two_render_processes(memcached, tileserver, tmp_path)
    assert server.proc is not None
    with Load(server.base, osm_paths(), planted) as load:
        time.sleep(PHASE)
        # Both render processes frozen, then the cache flushed: every tile not stored is
        # rendered again, and its request waits, whatever the machine's speed, until one
        # of them has waited a whole second (the hot tier's copies expire meanwhile). The
        # clients walk the kinds in turn: all of them may be waiting for the metatile of
        # `cached` (four tiles for four clients), none for an `on_demand` one.
        for pid in renderers:
            os.kill(pid, signal.SIGSTOP)
        flushed = time.monotonic()
        memcached.flush_all()
        try:
            wait_until(
                lambda: load.pending_since(*RENDERED) < time.monotonic() - 1,
                "a request waiting a second for the frozen render processes",
            )
            # A readiness probe meanwhile: not ready (503, "busy"), answered, not hung.
            ready = server.get("/ready")
            assert ready.status == 503, ready.status
            assert b"busy" in ready.body, ready.body
            os.kill(renderers[0], signal.SIGKILL)  # the pool breaks with renders under way
            killed = time.monotonic()
        finally:
            os.kill(renderers[1], signal.SIGCONT)
        back = wait_rebuilt(load, server, killed)
    assert_answers(load.before(flushed), {200}, "before the freeze")
    # Every request under way from the flush to the recovery got an answer (a tile
    # rendered again by the rebuilt pool, or a 503 if that failed too) within HANG of
    # the kill, when the server could act again (the test froze it for seconds before).
    around = load.overlapping(flushed, back)
    assert_answers(around, {200, 503}, "render processes frozen, one killed",
                   within=HANG + killed - flushed)  # fmt: skip
    late = [a for a in around if a.started + a.seconds - max(a.started, killed) > HANG]
    assert not late, f"answered more than {HANG:g} s after the kill: {describe(late)}"
    waited = [a for a in around if a.kind in RENDERED and a.started < killed - 1]
    assert [a for a in waited if a.started + a.seconds > killed], "none waited"
    assert_rebuilt(load, server, around, back)
    # A new pool; the old one's processes are gone, the continued one too.
    wait_until(lambda: not set(renderers) & set(render_processes(server.proc.pid)),
               "the old render processes gone")  # fmt: skip
    assert server.proc.poll() is None
