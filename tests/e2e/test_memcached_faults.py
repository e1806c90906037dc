"""End to end: Memcached faults that production sees, under load, with a real server.

- A Memcached paused for 15 s (SIGSTOP, as a VM migration or a swap storm does) and
  resumed: it executes the lock `add`s buffered meanwhile, yet no request waits for those
  locks, and none is left soon after.
- One Memcached of three killed: it costs only its own keys, which go to the next live
  server on the ring (and come back when it returns); logged once each way; /ready and
  /metrics show it.
- Memcached started after the server: the server uses it as soon as it answers, in every
  process, without a restart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_faults_under_load import (
    Load,
    assert_answers,
    folder_config,
    osm_paths,
    rest,
    sources,
    wait_recovered,
    warm,
)
from tests.e2e.test_on_demand import assert_map_tile
from tests.support.daemons import Memcached, freeze
from tests.support.server import TileServer, demo_config
from tests.support.waiting import wait_until
from tileserver.keys import layer_key_part, tile_key
from tileserver.types import TileCoord

pytestmark = pytest.mark.e2e

PAUSE = 15.0  # seconds memcached stays stopped
AFTER_RESUME = 5.0  # seconds any request may take once memcached is back
LOCKS_GONE = 10.0  # seconds after the resume by which no render lock is left
PART = layer_key_part("osm", "default", (), "epsg3857")


def key_of(z: int, row: int, col: int) -> str:
    return tile_key("test/", PART, TileCoord(z, row, col))


def test_a_memcached_paused_15_s_holds_no_request_up_once_resumed(
    memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    config, planted = folder_config(memcached, tmp_path / "tiles")
    server = tileserver(config, workers=2)
    warm(server)
    assert memcached.proc is not None
    pid = memcached.proc.pid
    with Load(server.base, osm_paths(), planted) as load:
        wait_until(
            lambda: len(load.answers()) >= 40, "40 answers of the load", timeout=60, interval=0.05
        )
        # Every tile not pre-generated renders again: renders (and their lock adds) are
        # under way when memcached stops, and buffered until it resumes.
        memcached.flush_all()
        paused = time.monotonic()
        freeze(pid)
        try:
            time.sleep(PAUSE)  # the fault itself: a 15 s pause
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        wait_recovered(
            load, resumed, "memcached resumed",
            condition=lambda recent: sources(recent, "cached") == {"memcached"}
            and sources(recent, "on_demand") == {"memcached"},
        )  # fmt: skip
        # No render lock outlives the pause by long: none left 10 s after the resume.
        wait_until(
            lambda: not memcached.keys("#lock/"),
            "the render locks gone",
            timeout=resumed + LOCKS_GONE - time.monotonic(),
            interval=0.05,
            detail=lambda: memcached.keys("#lock/"),
        )
    answers = load.answers()
    assert_answers(answers, {200}, "the whole run: 0 errors")
    assert load.answers(paused, resumed), "no request during the pause"
    # Once memcached answers again, no request takes more than 5 s: none waits for a
    # lock that memcached wrote late.
    late = [a for a in answers if a.started + a.seconds > resumed + AFTER_RESUME]
    slow = [a for a in late if a.started + a.seconds - max(a.started, resumed) > AFTER_RESUME]
    assert not slow, [(a.path, round(a.seconds, 1)) for a in slow]
    after = load.answers(resumed)
    assert after and max(a.seconds for a in after) <= AFTER_RESUME
    log = server.log()
    assert 1 <= log.count("memcached unavailable") <= 2, log  # once per server process
    assert log.count("memcached is back") == log.count("memcached unavailable")


def metatile_paths(rows: int, cols: int) -> list[tuple[str, str]]:
    """One tile of each of rows x cols metatiles (8 x 8 tiles) at level 18 over Monaco (the
    layer's limits there: rows 95565-95606, columns 136462-136498)."""
    return [("on_demand", rest("osm", 18, 95565 + 8 * i, 136462 + 8 * j))
            for i in range(rows) for j in range(cols)]  # fmt: skip


def coord_of(path: str) -> tuple[int, int, int]:
    z, row, col = path.removesuffix(".png").split("/")[-3:]
    return int(z), int(row), int(col)


def metric(server: TileServer, name: str, labels: str) -> float:
    text = server.get("/metrics").body.decode()
    match = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    assert match is not None, text[:2000]
    return float(match.group(1))


def test_one_memcached_of_three_killed_costs_only_its_own_keys(
    tileserver: Callable[..., TileServer],
) -> None:
    daemons = [Memcached() for _ in range(3)]
    for daemon in daemons:
        daemon.start()
    try:
        config = demo_config(daemons[0].address)
        config["memcached"]["servers"] = [d.address for d in daemons]
        server = tileserver(config)
        paths = metatile_paths(5, 5)
        for _, path in paths:
            assert server.get(path).status == 200
        keys = {path: key_of(*coord_of(path)) for _, path in paths}
        owners = {path: [d.get(key) is not None for d in daemons].index(True)
                  for path, key in keys.items()}  # fmt: skip
        # Kill the server holding the fewest of these keys, but at least 3: where the keys
        # land depends on the servers' (random) ports, and the test wants both sides seen.
        held = Counter(owners.values())
        victim_index = min((i for i in held if held[i] >= 3), key=lambda i: held[i])
        victim = daemons[victim_index]
        dead = {path for path, owner in owners.items() if owner == victim_index}
        live = set(keys) - dead
        assert len(live) >= len(paths) / 2 and len(dead) >= 3, (len(live), len(dead))
        renders = server.renders()

        victim.kill()
        killed = time.monotonic()
        with Load(server.base, paths) as load:
            # Every path answered at least 3 times since the kill.
            wait_until(
                lambda: (
                    min(Counter(a.path for a in load.answers(killed)).values(), default=0) >= 3
                    and len({a.path for a in load.answers(killed)}) == len(paths)
                ),
                "every path answered 3 times since the kill",
                timeout=60,
                interval=0.05,
            )
            # /ready and /metrics show the server down while it is.
            report = server.get("/ready")
            metrics_down = metric(server, "tileserver_cache_server_up",
                                  f'server="{victim.address}"')  # fmt: skip
            others_up = [metric(server, "tileserver_cache_server_up", f'server="{d.address}"')
                         for d in daemons if d is not victim]  # fmt: skip
        answers = load.answers(killed)
        assert_answers(answers, {200}, "one server of three dead")
        # The live servers keep every key they had: their tiles still come from memcached.
        assert {a.source for a in answers if a.path in live} == {"memcached"}
        from_memcached = sum(a.source == "memcached" for a in answers)
        assert from_memcached >= len(answers) / 2, Counter(a.source for a in answers)
        # The dead server's tiles are rendered once each, then kept on the next server.
        again = server.renders() - renders
        assert len(dead) <= again <= len(dead) + 2, (again, len(dead))
        assert report.status == 200
        body = json.loads(report.body)
        assert f"tile cache memcached {victim.address}" in body["degraded"], body
        assert body["tile_cache"]["memcached"][victim.address].startswith("down for")
        assert metrics_down == 0.0 and others_up == [1.0, 1.0]

        # Back: the dead server's keys move back to it (it restarted empty: rendered again).
        victim.start()
        restarted = time.monotonic()
        with Load(server.base, paths) as load:
            wait_until(
                lambda: all(victim.get(keys[p]) is not None for p in dead),
                "the keys moved back to the restarted server",
                timeout=60,
                interval=0.05,
            )
            wait_recovered(
                load, restarted, "server back",
                condition=lambda recent: {a.source for a in recent} == {"memcached"},
            )  # fmt: skip
        assert_answers(load.answers(restarted), {200}, "after the restart")
        assert metric(server, "tileserver_cache_server_up", f'server="{victim.address}"') == 1.0
        log = server.log()
        assert log.count(f"memcached unavailable at {victim.address}") == 1, log
        assert log.count(f"memcached is back at {victim.address}") == 1, log
        assert "memcached unavailable at" not in log.replace(
            f"memcached unavailable at {victim.address}", ""
        )
    finally:
        for daemon in daemons:
            daemon.stop()


def test_memcached_started_after_the_server_is_used_as_soon_as_it_answers(
    tileserver: Callable[..., TileServer],
) -> None:
    daemon = Memcached()  # its port is chosen; it is not running yet
    server = tileserver(demo_config(daemon.address), workers=2)
    try:
        assert server.log().count("not reachable at start-up") == 2  # each process
        first = server.get(rest("osm", 17, 47790, 68240))
        assert first.status == 200 and first.headers["x-tile-source"] == "render"
        assert_map_tile(first.body)
        ready = server.get("/ready")
        assert ready.status == 200
        assert f"tile cache memcached {daemon.address}" in ready.body.decode()

        daemon.start()
        started = time.monotonic()
        back = f"memcached is back at {daemon.address}"
        # Both processes find it (a request or a readiness check each), without a restart.
        wait_until(
            lambda: server.get("/ready").status == 200 and server.log().count(back) == 2,
            "both processes to find memcached back",
            timeout=30,
            interval=0.05,
            detail=server.log,
        )
        tile = (17, 47782, 68235)  # a metatile not rendered yet
        assert server.get(rest("osm", *tile)).headers["x-tile-source"] == "render"
        wait_until(
            lambda: daemon.get(key_of(*tile)) is not None,
            "the tile in memcached",
            timeout=5,
            interval=0.05,
        )
        assert time.monotonic() - started < 30

        # flush_all reaches every process: each renders again or reads memcached, none
        # answers from its own in-process cache.
        daemon.flush_all()
        flushed = len(server.log())
        renders = server.renders()
        path = rest("osm", *tile)
        answers = []

        def both_processes_answered() -> bool:
            answers.append(server.get(path))
            lines = re.findall(rf"\[(\d+)\] INFO tileserver.access: .*{re.escape(path)}.* "
                               r"source=(\S+)", server.log()[flushed:])  # fmt: skip
            return len({pid for pid, _ in lines}) == 2

        wait_until(
            both_processes_answered, "an answer from each process", timeout=30, interval=0.05
        )
        found = [a.headers["x-tile-source"] for a in answers]
        assert found[0] == "render" and set(found[1:]) <= {"memcached"}, found
        assert server.renders() == renders + 1
        assert all(a.status == 200 for a in answers)
    finally:
        daemon.stop()
