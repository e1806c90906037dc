"""End to end, for operators: /metrics, /health, /ready, JSON logs and SIGHUP reloads on
a real `tileserver serve` (1 or 2 server processes) with a real memcached."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_on_demand import COL, ROW, assert_map_tile, tile_path
from tests.support.daemons import Memcached
from tests.support.server import Response, TileServer, demo_config, fetch
from tests.support.waiting import wait_until


def metrics(server: TileServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics by (name, labels)."""
    response = server.get("/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_hits_renders_and_errors_over_two_processes(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    server = tileserver(demo_config(memcached.address), workers=2)
    before = metrics(server)

    assert server.get(tile_path(ROW, COL)).headers["x-tile-source"] == "render"
    hits = [server.get(tile_path(ROW, COL + d)) for d in (1, 2, 3, 1, 2, 3)]
    assert [h.headers["x-tile-source"] for h in hits] == ["memcached"] * 6
    assert server.get("/wmts/1.0.0/nosuch/default/epsg3857/17/1/1.png").status == 400
    assert server.get("/wmts?SERVICE=WMTS&REQUEST=GetTile").status == 400

    # Both processes write their values; /metrics, from either, sums them.
    after = metrics(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tileserver_tiles_total", layer="osm", source="render") == 1
    assert delta("tileserver_tiles_total", layer="osm", source="memcached") == 6
    assert delta("tileserver_renders_total", layer="osm") == 1
    assert delta("tileserver_render_duration_seconds_count", layer="osm") == 1
    assert delta("tileserver_render_duration_seconds_sum", layer="osm") > 0.01
    assert delta("tileserver_http_requests_total", endpoint="tile", status="200") == 7
    assert delta("tileserver_http_requests_total", endpoint="wmts", status="400") == 2
    assert delta("tileserver_http_request_duration_seconds_count", endpoint="tile",
                 layer="osm") == 7  # fmt: skip
    # The served requests were spread over both processes, and /metrics still adds up.
    pids = {line.split("[")[1].split("]")[0] for line in server.log().splitlines()
            if "tileserver.access" in line}  # fmt: skip
    assert len(pids) == 2, f"one process took every request: {pids}"

    memcached.kill()
    assert server.get(tile_path(ROW, COL + 4)).status == 200  # a miss, rendered without it

    def memcached_errors() -> float:
        samples = metrics(server)
        return value(samples, "tileserver_dependency_errors_total",
                     dependency="memcached", kind="unavailable")  # fmt: skip

    assert wait_until(lambda: memcached_errors() >= 1, "a memcached error counted")


def test_health_and_ready_when_the_render_pool_dies(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    server = tileserver(demo_config(memcached.address), render_processes=2)
    assert server.get("/health").status == 200
    ready = server.get("/ready")
    assert ready.status == 200, ready.body
    report = json.loads(ready.body)
    assert report["ready"] is True and report["render_pool"] == "up"
    assert report["layers"] == ["osm", "osm_lv95"] and report["degraded"] == {}
    assert server.proc is not None
    render_processes = _render_processes(server.proc.pid)  # started as jobs come: 1 or 2
    assert 1 <= len(render_processes) <= 2

    for pid in render_processes:
        os.kill(pid, signal.SIGKILL)
    down = server.get("/ready")
    assert down.status == 503, down.body
    report = json.loads(down.body)
    assert report["ready"] is False and report["render_pool"].startswith("down")
    assert server.get("/health").status == 200  # alive: the load balancer should not kill it

    # The readiness check restarted the pool: ready again, and tiles render.
    assert wait_until(lambda: server.get("/ready").status == 200, "/ready to answer 200")
    assert server.get(tile_path(ROW, COL)).status == 200

    memcached.kill()
    server.get(tile_path(ROW - 8, COL))
    degraded = json.loads(server.get("/ready").body)
    assert degraded["ready"] is True  # still serving, without its cache
    assert f"tile cache memcached {memcached.address}" in degraded["degraded"], degraded
    assert degraded["tile_cache"]["memcached"][memcached.address].startswith("down for")


def _render_processes(server_pid: int) -> list[int]:
    """The multiprocessing children of a server process that render (not its resource
    tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def test_json_log_lines_parse(memcached: Memcached, tileserver: Callable[..., TileServer]) -> None:
    config = demo_config(memcached.address)
    config.setdefault("server", {})["log_format"] = "json"
    server = tileserver(config)
    server.get(tile_path(ROW, COL))
    server.get(tile_path(ROW, COL + 1))
    server.get("/wmts?SERVICE=WMTS")
    # An access line is written once its answer is sent: wait for the last one.
    assert wait_until(lambda: '"path":"/wmts?SERVICE=WMTS"' in server.log(), "the access line")
    lines = [line for line in server.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line, not only the access log
    assert all({"time", "level", "logger", "process", "message"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "tileserver.access"]
    tiles = [e for e in access if "layer" in e]
    assert [(e["layer"], e["zoom"], e["source"], e["status"]) for e in tiles] == [
        ("osm", 17, "render", 200),
        ("osm", 17, "memcached", 200),
    ]
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] > 0 for e in tiles)
    assert tiles[0]["duration_ms"] > tiles[1]["duration_ms"]  # a render vs a hit
    errors = [e for e in access if e["status"] == 400]
    assert len(errors) == 1 and errors[0]["path"] == "/wmts?SERVICE=WMTS"
    assert any(e["logger"] == "tileserver.render" and "rendered metatile" in e["message"]
               for e in entries)  # fmt: skip


class _Load:
    """Requests in a loop from a few threads; every answer is recorded."""

    def __init__(self, base: str, paths: list[str], threads: int = 4) -> None:
        self.base, self.paths = base, paths
        self.answers: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            try:
                status = fetch(self.base + path, timeout=30).status
            except OSError as exc:  # a refused or reset connection is a failed request
                status = -1
                path = f"{path} ({exc})"
            self.answers.append((path, status))
            i += 1

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _reload(server: TileServer, config: dict[str, Any] | str) -> None:
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    server.config_path.write_text(text)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)


def test_sighup_reloads_without_a_failed_request_and_refuses_a_broken_config(
    memcached: Memcached, tileserver: Callable[..., TileServer]
) -> None:
    config = demo_config(memcached.address)
    server = tileserver(config, workers=2)
    warm = [tile_path(ROW, COL + d) for d in range(4)]
    for path in warm:
        assert server.get(path).status == 200
    assert server.get(tile_path(ROW, COL, layer="osm2")).status == 400
    first_max_age = server.get(warm[0]).headers["cache-control"]

    changed = demo_config(memcached.address, osm={"expires": 2})
    changed["layers"]["osm2"] = dict(changed["layers"]["osm"])
    with _Load(server.base, [*warm, "/wmts/1.0.0/WMTSCapabilities.xml"]) as load:
        # Requests before the reload, during it, and after it: counted, not timed.
        wait_until(lambda: len(load.answers) >= 30, "answers before the reload")
        _reload(server, changed)
        assert wait_until(lambda: server.log().count("configuration reloaded") == 2, "both reloads")
        after = len(load.answers)
        wait_until(lambda: len(load.answers) >= after + 30, "answers after the reload")
    failed = [(p, s) for p, s in load.answers if s != 200]
    assert failed == [] and len(load.answers) > 50, failed[:5]

    # Every process now serves the new configuration.
    for _ in range(6):
        assert server.get(warm[0]).headers["cache-control"] == "public, max-age=7200"
        new_layer = server.get(tile_path(ROW, COL, layer="osm2"))
        assert new_layer.status == 200
        assert_map_tile(new_layer.body)
    assert first_max_age == "public, max-age=14400"
    assert b"<ows:Identifier>osm2</ows:Identifier>" in server.get(
        "/wmts/1.0.0/WMTSCapabilities.xml").body  # fmt: skip

    # A broken configuration is refused with its error; the one in use keeps serving.
    broken = demo_config(memcached.address)
    broken["layers"]["osm"]["meta_size"] = "eight"
    _reload(server, broken)
    assert wait_until(lambda: server.log().count("reload refused") == 2, "two refusals")
    assert "layers.osm.meta_size: expected an integer" in server.log()
    _reload(server, "grids: [unclosed")
    assert wait_until(lambda: server.log().count("reload refused") == 4, "four refusals")
    for _ in range(4):
        answer: Response = server.get(tile_path(ROW, COL, layer="osm2"))
        assert answer.status == 200
        assert server.get(warm[1]).headers["cache-control"] == "public, max-age=7200"
    ready = json.loads(server.get("/ready").body)
    assert ready["ready"] is True and ready["reloads"] == 1
