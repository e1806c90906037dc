"""On-demand serving benchmark: Memcached hits, cold metatile renders, one cold tile.

Starts its own memcached and `tileserver serve` on free loopback ports, then measures

  hits    the 200-tile warm set (40 z15 + 160 z16 tiles nearest Monaco's centre), fetched
          twice, then `wrk -t2 -c32 -d10s` cycling through those URLs: req/s, p50/p99,
          non-2xx, renders during the run (must be 0)
  cold    flush, then the 847 z17+z18 tiles over Monaco's land (20 distinct 8x8
          metatiles) with 8 concurrent keep-alive connections: tiles/s, p50/p99, renders
          (must be 20), every answer HTTP 200 with a PNG signature; repeated, median shown
  single  N times: flush, then one tile of a cold metatile with no other load: p50/p99,
          and the render time the server logged, so latency minus render time is known

and the same phases for each `--peer` over the same tiles, in the same run, printing
tileserver ÷ peer ratios (absolute figures drift on a shared machine; ratios less so).
The tile lists are those of the peers' tools/tiles.py (`warm`, `cold`). `--wms-layer` adds
a `type: wms` layer `osm_wms` over the peers' MapServer WMS to the same server, measured
as a second target `tileserver-wms`. During tileserver's hit phases the VmRSS of every
process of the server (master, workers, render processes) is sampled every 0.5 s.

  .venv/bin/python benchmarks/bench_ondemand.py --workers 1
  .venv/bin/python benchmarks/bench_ondemand.py --workers 2 --peer mapcache --peer mapproxy-mapnik
  .venv/bin/python benchmarks/bench_ondemand.py --workers 2 --wms-layer --peer mapcache \
      --peer mapproxy-mapnik --peer mapproxy-wms
  .venv/bin/python benchmarks/bench_ondemand.py --memcached 127.0.0.1:11211 --serve --port 8090

A table goes to stdout; JSON and logs to benchmarks/out/ondemand-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the daemons helpers are shared with the tests

from static_ceiling import StaticNginx  # noqa: E402
from wrk_output import parse_wrk  # noqa: E402

from tests.support.daemons import Memcached, free_port, stop_process, wait_port  # noqa: E402

DEMO_CONFIGS = (ROOT / "config" / "demo.yaml", ROOT / "config" / "demo.yaml.mako")
WRK_SCRIPT = HERE / "wrk_paths.lua"
OUT_DIR = HERE / "out"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PEERS_RUN_DIR = Path(os.environ.get("PEERS_RUN_DIR", "/tmp/peers-run"))

TILESERVER_PATH = "/wmts/1.0.0/osm/default/epsg3857/{z}/{y}/{x}.png"
WMS_LAYER = "osm_wms"
TILESERVER_WMS_PATH = f"/wmts/1.0.0/{WMS_LAYER}/default/epsg3857/{{z}}/{{y}}/{{x}}.png"
PEERS_WMS_URL = "http://127.0.0.1:8081/wms"  # the peers' MapServer, WMS layer `osm`
RSS_INTERVAL_S = 0.5
RENDER_LINE = "rendered metatile"
RENDER_MS = re.compile(r" in (\d+(?:\.\d+)?) ms")

# The peers' tools/tiles.py: Monaco's centre and land bbox (lon, lat).
CENTER = (7.4246, 43.7384)
LAND_BBOX = (7.4090, 43.7240, 7.4400, 43.7520)
# The demo layer's bbox stops short of the warm set's outer tiles (they would be 400
# TileOutOfRange); the benchmark layer covers the whole warm set (EPSG:3857 metres).
BENCH_LAYER_BBOX = [821500, 5420000, 831500, 5430000]
# z17 over Monte-Carlo, in a metatile with buildings, roads and labels (as in the e2e tests).
SINGLE_TILE = (17, 68240, 47790)  # z, x (column), y (row)


# --- tile lists (same definitions as the peers' tools/tiles.py) --------------------------


def tile_xy(lon: float, lat: float, z: int) -> tuple[float, float]:
    n = 2**z
    x = (lon + 180.0) / 360.0 * n
    y = (1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n
    return x, y


def nearest(z: int, count: int) -> list[tuple[int, int, int]]:
    """The `count` tiles of zoom z whose centres are nearest Monaco's centre."""
    cx, cy = tile_xy(*CENTER, z)
    r = int(math.sqrt(count)) + 3
    candidates = [
        (x, y)
        for x in range(int(cx) - r, int(cx) + r + 1)
        for y in range(int(cy) - r, int(cy) + r + 1)
    ]
    candidates.sort(key=lambda t: ((t[0] + 0.5 - cx) ** 2 + (t[1] + 0.5 - cy) ** 2, t))
    return [(z, x, y) for x, y in candidates[:count]]


def covering(z: int, bbox: tuple[float, float, float, float]) -> list[tuple[int, int, int]]:
    x0, y1 = tile_xy(bbox[0], bbox[1], z)
    x1, y0 = tile_xy(bbox[2], bbox[3], z)
    return [(z, x, y) for x in range(int(x0), int(x1) + 1) for y in range(int(y0), int(y1) + 1)]


def warm_tiles() -> list[tuple[int, int, int]]:
    return nearest(15, 40) + nearest(16, 160)


def cold_tiles() -> list[tuple[int, int, int]]:
    return covering(17, LAND_BBOX) + covering(18, LAND_BBOX)


def metatiles(tiles: Sequence[tuple[int, int, int]], size: int = 8) -> int:
    return len({(z, x // size, y // size) for z, x, y in tiles})


def expand(template: str, tiles: Sequence[tuple[int, int, int]]) -> list[str]:
    return [
        template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
        for z, x, y in tiles
    ]


# --- small helpers -----------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank on the sorted list, as the peers' tools/fetch.py computes it."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p / 100.0 * len(sorted_values)))]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def run_header(started: str, load_before: str) -> dict[str, Any]:
    """The fields every benchmark's result.json starts with: when, the command, the machine."""
    return {
        "started_utc": started,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return user + nice + system + irq + softirq, sum(fields)


def cpu_busy_pct(before: tuple[int, int], after: tuple[int, int]) -> int:
    return round(100 * (after[0] - before[0]) / max(1, after[1] - before[1]))


def git_revision() -> str | None:
    """HEAD of the checkout measured, with "+dirty" when tileserver/ has local edits."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "tileserver"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def memcached_command(address: str, line: str) -> str:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(line.encode() + b"\r\n")
        data = b""
        while not data.endswith((b"END\r\n", b"OK\r\n", b"ERROR\r\n")):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def flush_memcached(address: str) -> None:
    reply = memcached_command(address, "flush_all").strip()
    if reply != "OK":
        raise RuntimeError(f"memcached {address} flush_all answered {reply!r}")


# --- daemons we start ------------------------------------------------------------------


def demo_config() -> dict[str, Any]:
    """The demo configuration with the template's defaults, its mapfile made absolute."""
    demo = next((p for p in DEMO_CONFIGS if p.exists()), None)
    if demo is None:
        raise SystemExit(f"no demo configuration: {' or '.join(map(str, DEMO_CONFIGS))}")
    if demo.suffix == ".mako":
        from tileserver.config_loader import render_text

        text = render_text(demo, environ={})  # the template's defaults
    else:
        text = demo.read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    mapfile = Path(data["layer_default"]["mapfile"])
    data["layer_default"]["mapfile"] = str((demo.parent / mapfile).resolve())
    return data


def bench_config(memcached: str) -> dict[str, Any]:
    """The demo configuration on one memcached, with a layer bbox covering the warm set."""
    data = demo_config()
    data.pop("caches", None)
    data.pop("generation", None)
    data["memcached"] = {"servers": [memcached], "prefix": "bench/"}
    data["layers"]["osm"]["bbox"] = BENCH_LAYER_BBOX
    return data


def add_wms_layer(data: dict[str, Any], url: str = PEERS_WMS_URL) -> dict[str, Any]:
    """Adds layer `osm_wms`: `type: wms` over `url` (WMS layer `osm`), with the grid, bbox
    and 8x8 metatiles (32 px buffer) of `osm`, as MapCache and MapProxy's `osm_wms` have."""
    osm = data["layers"]["osm"]
    data["layers"][WMS_LAYER] = {
        "type": "wms",
        "title": "Monaco through the peers' MapServer WMS",
        "grid": osm["grid"],
        "bbox": list(osm["bbox"]),
        "url": url,
        "layers": "osm",
        "meta": True,
        "meta_size": 8,
        "meta_buffer": 32,
    }
    return data


def apply_settings(data: dict[str, Any], settings: Sequence[str]) -> dict[str, Any]:
    """`--set a.b=VALUE` options written into the configuration (VALUE read as YAML)."""
    for item in settings:
        path, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: expected KEY.PATH=VALUE")
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = yaml.safe_load(value)
    return data


class TileServer:
    """`tileserver serve` on 127.0.0.1:<port>, stderr (with the render log) to a file."""

    def __init__(
        self,
        memcached: str,
        workdir: Path,
        port: int,
        workers: int,
        render_processes: int | None,
        config: dict[str, Any] | None = None,
    ) -> None:
        """`config` (default: `bench_config(memcached)`) is written to tileserver.yaml."""
        self.config_path = workdir / "tileserver.yaml"
        data = config if config is not None else bench_config(memcached)
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.log_path = workdir / "tileserver.log"
        self.port = port
        self.workers = workers
        command = [sys.executable, "-m", "tileserver", "serve", "--config", str(self.config_path),
                   "--port", str(port), "--workers", str(workers)]  # fmt: skip
        if render_processes:
            command += ["--render-processes", str(render_processes)]
        self.command = command
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        log(f"tileserver pid {self.proc.pid} on port {port}, log {self.log_path}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        if not wait_port(self.port, timeout, self.proc):
            raise RuntimeError(f"tileserver did not start:\n{self.log_text()[-3000:]}")
        url = self.base + "/wmts/1.0.0/WMTSCapabilities.xml"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            text = self.log_text()
            if text.count("render pool:") >= self.workers and http_status(url) == 200:
                caches = re.findall(r"tile cache: (.*)", text)
                if not all(c.startswith("memcached") for c in caches):
                    raise RuntimeError(f"tileserver is not on memcached: {caches}")
                return
            time.sleep(0.2)
        raise RuntimeError(f"tileserver did not become ready:\n{self.log_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        """The processes that serve HTTP: the children of the master, or the master itself."""
        if self.workers == 1:
            return [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def process_tree(self) -> list[int]:
        """The master and every process below it (workers, render processes...)."""
        return descendants(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc, grace=20)
        self._log.close()


def http_status(url: str) -> int | None:
    """The status of a GET of url, None when nothing answers."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
            return int(r.status)
    except OSError:
        return None


# --- the server's processes and their memory -----------------------------------------------


def descendants(pid: int) -> list[int]:
    """pid and every process below it, from /proc/PID/task/*/children."""
    todo, seen = [pid], []
    while todo:
        current = todo.pop()
        seen.append(current)
        for path in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(p) for p in path.read_text().split()]
    return seen


def process_kind(pid: int, master: int, workers: int) -> str:
    """master (or `server` when it serves itself), worker, render, resource tracker..."""
    try:
        text = b" ".join(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    except OSError:
        return "gone"
    if pid == master:
        return "master" if workers > 1 else "server"
    if b"spawn_main" in text:
        return "render"
    if b"resource_tracker" in text:
        return "resource tracker"
    if b"tileserver" in text and b"serve" in text:
        return "worker"
    return Path(text.split(b" ")[0].decode(errors="replace")).name or "?"


def rss_kb(pid: int) -> int | None:
    """VmRSS of pid in kB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """In a thread, every `interval` s: the VmRSS of `root` and of every process below it.

    Keeps the maximum of each process and of their sum; processes that appear during the
    sampling (a render process restarted) are added as they are seen.
    """

    def __init__(self, root: int, workers: int, interval: float = RSS_INTERVAL_S) -> None:
        self.root = root
        self.workers = workers
        self.interval = interval
        self.samples = 0
        self.max_kb: dict[int, int] = {}
        self.kinds: dict[int, str] = {}
        self.max_total_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        total = 0
        for pid in descendants(self.root):
            kb = rss_kb(pid)
            if kb is None:
                continue
            if pid not in self.kinds:
                self.kinds[pid] = process_kind(pid, self.root, self.workers)
            self.max_kb[pid] = max(kb, self.max_kb.get(pid, 0))
            total += kb
        self.samples += 1
        self.max_total_kb = max(self.max_total_kb, total)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                self.sample()  # one last sample at the end of the phase
                return

    def summary(self) -> dict[str, Any]:
        processes = [
            {"pid": pid, "kind": self.kinds[pid], "max_rss_mb": round(kb / 1024, 1)}
            for pid, kb in self.max_kb.items()
        ]
        return _rss_report(processes, self.interval, self.samples, self.max_total_kb / 1024)


def _rss_report(
    processes: list[dict[str, Any]], interval: float, samples: int, max_total_mb: float
) -> dict[str, Any]:
    processes = sorted(processes, key=lambda p: (p["kind"], p["pid"]))
    top = max(processes, key=lambda p: p["max_rss_mb"], default=None)
    by_kind: dict[str, float] = {}
    for p in processes:
        by_kind[p["kind"]] = max(by_kind.get(p["kind"], 0.0), p["max_rss_mb"])
    return {
        "interval_s": interval,
        "samples": samples,
        "processes": processes,
        "max_rss_mb_by_kind": by_kind,
        "max_rss_mb": top["max_rss_mb"] if top else None,
        "max_rss_kind": top["kind"] if top else None,
        "max_total_rss_mb": round(max_total_mb, 1),
    }


def merge_rss(summaries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The per-process maxima over several RssSampler summaries of the same server."""
    if not summaries:
        return None
    by_pid: dict[int, dict[str, Any]] = {}
    for summary in summaries:
        for p in summary["processes"]:
            known = by_pid.setdefault(p["pid"], dict(p))
            known["max_rss_mb"] = max(known["max_rss_mb"], p["max_rss_mb"])
    return _rss_report(
        list(by_pid.values()),
        summaries[0]["interval_s"],
        sum(s["samples"] for s in summaries),
        max(s["max_total_rss_mb"] for s in summaries),
    )


# --- what is measured: servers, their flush, their render log -----------------------------


@dataclass(frozen=True)
class RenderLog:
    """Upstream renders read from a log: lines containing `needle`, duration in ms."""

    path: Path
    needle: str
    duration_ms: Callable[[str], float | None]
    what: str

    def matching(self) -> list[str]:
        if not self.path.exists():
            return []
        needle = self.needle.lower()
        with self.path.open(errors="replace") as f:
            return [line for line in f if needle in line.lower()]


def _tileserver_ms(line: str) -> float | None:
    m = RENDER_MS.search(line)
    return float(m.group(1)) if m else None


def tileserver_renders(log_path: Path, layer: str) -> RenderLog:
    """The `rendered metatile <layer>/<style>/...` lines of one layer in tileserver's log."""
    return RenderLog(
        log_path, f"{RENDER_LINE} {layer}/", _tileserver_ms, f"tileserver log, layer {layer}"
    )


def _last_field(scale: float) -> Callable[[str], float | None]:
    def parse(line: str) -> float | None:
        try:
            return float(line.split()[-1]) * scale
        except (ValueError, IndexError):
            return None

    return parse


@dataclass(frozen=True)
class Target:
    name: str
    template: str  # a URL with {z} {x} {y}; y counts rows from the top (XYZ, WMTS)
    flush: Callable[[], None]
    flush_desc: str
    renders: RenderLog | None
    # for a tileserver layer over a WMS: the upstream's own GetMap log (its render times)
    upstream: RenderLog | None = None
    hits_only: bool = False  # a static-file ceiling: nothing to render, no cold phases
    # the server's processes (master, workers, render processes), for their CPU time
    processes: Callable[[], list[int]] | None = None

    @property
    def base(self) -> str:
        m = re.match(r"https?://[^/]+", self.template)
        if m is None:
            raise SystemExit(f"{self.name}: not an http URL template: {self.template}")
        return m.group(0)


def _wms_getmaps() -> RenderLog:
    return RenderLog(
        PEERS_RUN_DIR / "logs" / "wms-access.log",
        "request=getmap",
        _last_field(1e-3),  # apache %D, microseconds
        "MapServer GetMaps (apache %D)",
    )


def _rmtree(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


def peer_presets() -> dict[str, tuple[str, str, RenderLog]]:
    """name -> (template, flush spec, render log) for the peers of /work/shared/peers."""
    cache = PEERS_RUN_DIR / "mapproxy" / "cache"
    mapproxy = "http://127.0.0.1:8083/wmts/{layer}/GoogleMapsCompatible/{{z}}/{{x}}/{{y}}.png"
    return {
        "mapcache": (
            "http://127.0.0.1:8082/mapcache/wmts/1.0.0/osm/default/GoogleMapsCompatible/"
            "{z}/{y}/{x}.png",
            "127.0.0.1:11211",
            _wms_getmaps(),
        ),
        "mapproxy-mapnik": (
            mapproxy.format(layer="osm"),
            f"rmtree:{cache / 'osm_mapnik_cache_EPSG3857'}",
            RenderLog(
                PEERS_RUN_DIR / "logs" / "mapproxy-source.log",
                " API ",
                _last_field(1.0),
                "MapProxy Mapnik renders (source log)",
            ),
        ),
        "mapproxy-wms": (
            mapproxy.format(layer="osm_wms"),
            f"rmtree:{cache / 'osm_wms_cache_EPSG3857'}",
            _wms_getmaps(),
        ),
    }


def make_flush(spec: str) -> tuple[Callable[[], None], str]:
    """HOST:PORT = memcached flush_all; rmtree:DIR; none; anything else = a shell command."""
    if spec == "none":
        return (lambda: None), "none"
    if spec.startswith("rmtree:"):
        path = Path(spec.removeprefix("rmtree:"))
        return _rmtree(path), f"rm -rf {path}"
    if re.fullmatch(r"[\w.\-]+:\d+", spec):
        return (lambda: flush_memcached(spec)), f"memcached flush_all on {spec}"

    def run() -> None:
        subprocess.run(spec, shell=True, check=True)

    return run, spec


def parse_peers(args: argparse.Namespace) -> list[Target]:
    presets = peer_presets()
    flushes = dict(_pair(v, "--peer-flush") for v in args.peer_flush)
    targets = []
    for value in args.peer:
        name, _, template = value.partition("=")
        render_log: RenderLog | None = None
        flush_spec = "127.0.0.1:11211"
        if name in presets:
            preset_template, flush_spec, render_log = presets[name]
            template = template or preset_template
        elif not template:
            raise SystemExit(
                f"--peer {name}: give NAME=URL_TEMPLATE or one of {', '.join(presets)}"
            )
        flush, desc = make_flush(flushes.get(name, flush_spec))
        targets.append(Target(name, template, flush, desc, render_log))
    return targets


def _pair(value: str, option: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep:
        raise SystemExit(f"{option} {value}: expected NAME=VALUE")
    return name, rest


# --- HTTP client -----------------------------------------------------------------------


@dataclass
class FetchResult:
    n: int
    ok: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]
    bytes: int
    sources: Counter[str]
    first_error: str | None

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "n": self.n,
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "tiles_per_s": round(self.n / self.elapsed_s, 1) if self.elapsed_s else None,
            "p50_ms": rounded(percentile(lat, 50)),
            "p90_ms": rounded(percentile(lat, 90)),
            "p99_ms": rounded(percentile(lat, 99)),
            "max_ms": rounded(percentile(lat, 100)),
            "bytes": self.bytes,
            "x_tile_source": dict(self.sources),
            "first_error": self.first_error,
        }


async def _fetch_all(urls: Sequence[str], concurrency: int) -> FetchResult:
    """GET every URL with `concurrency` keep-alive connections; the list order is kept."""
    result = FetchResult(len(urls), 0, 0, 0.0, [], 0, Counter(), None)
    next_index = 0
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < len(urls):
            url = urls[next_index]
            next_index += 1
            error = None
            start = time.perf_counter()
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    result.sources[response.headers.get("X-Tile-Source", "-")] += 1
                    if response.status != 200 or not body.startswith(PNG_SIGNATURE):
                        error = f"{url} -> HTTP {response.status} {body[:120]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error, body = f"{url} -> {type(exc).__name__}: {exc}", b""
            result.latencies_ms.append((time.perf_counter() - start) * 1000)
            if error:
                result.errors += 1
                result.first_error = result.first_error or error
            else:
                result.ok += 1
                result.bytes += len(body)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    return result


def fetch_all(urls: Sequence[str], concurrency: int) -> FetchResult:
    return asyncio.run(_fetch_all(urls, concurrency))


async def _fetch_one_each(urls: Sequence[str], before_each: Callable[[], None]) -> FetchResult:
    """One request at a time on one keep-alive connection, `before_each` run before each."""
    result = FetchResult(len(urls), 0, 0, 0.0, [], 0, Counter(), None)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for url in urls:
            before_each()
            start = time.perf_counter()
            async with session.get(url) as response:
                body = await response.read()
            result.latencies_ms.append((time.perf_counter() - start) * 1000)
            result.sources[response.headers.get("X-Tile-Source", "-")] += 1
            if response.status == 200 and body.startswith(PNG_SIGNATURE):
                result.ok += 1
            else:
                result.errors += 1
    return result


# --- phases ------------------------------------------------------------------------------


@dataclass
class Settings:
    wrk_threads: int
    wrk_conn: int
    wrk_duration: str
    cold_conc: int
    cold_repeats: int
    single_repeats: int
    single_tile: tuple[int, int, int]
    pause: float
    run_dir: Path
    hit_rounds: int = 2


def render_ms_since(render_log: RenderLog | None, before: int) -> tuple[int | None, list[float]]:
    if render_log is None:
        return None, []
    lines = render_log.matching()[before:]
    durations = [d for d in map(render_log.duration_ms, lines) if d is not None]
    return len(lines), durations


def render_count(render_log: RenderLog | None) -> int:
    return len(render_log.matching()) if render_log else 0


def run_hits(target: Target, s: Settings) -> dict[str, Any]:
    urls = expand(target.template, warm_tiles())
    fill = fetch_all(urls, s.cold_conc)
    check = fetch_all(urls, s.cold_conc)
    if check.errors:
        log(f"{target.name}: warm set has errors: {check.first_error}")
    paths_file = s.run_dir / f"{target.name}.warm.paths"
    paths_file.write_text("".join(u.removeprefix(target.base) + "\n" for u in urls))
    time.sleep(s.pause)
    command = ["wrk", f"-t{s.wrk_threads}", f"-c{s.wrk_conn}", f"-d{s.wrk_duration}",
               "--timeout", "10s", "-s", str(WRK_SCRIPT), target.base]  # fmt: skip
    load1 = loadavg()
    r0, c0 = render_count(target.renders), cpu_times()
    wrk = subprocess.run(
        command,
        env={**os.environ, "WRK_PATHS": str(paths_file)},
        capture_output=True,
        text=True,
        check=False,
    )
    c1 = cpu_times()
    renders, _ = render_ms_since(target.renders, r0)
    (s.run_dir / f"{target.name}.wrk.txt").write_text(wrk.stdout + wrk.stderr)
    try:
        result = parse_wrk(wrk.stdout)
        stats = result.figures()
    except ValueError as exc:
        raise RuntimeError(f"{target.name}: {exc}\n{wrk.stderr}") from None
    return {
        "command": f"WRK_PATHS={paths_file} " + " ".join(command),
        "warm_fill": fill.summary(),
        "warm_check": check.summary(),
        "rps": stats["rps"],
        "p50_ms": stats["p50_ms"],
        "p90_ms": stats["p90_ms"],
        "p99_ms": stats["p99_ms"],
        "max_ms": stats["max_ms"],
        "requests": stats["requests"],
        "non2xx": result.non2xx,
        "socket_errors": result.socket_errors,
        "renders": renders,
        "cpu_pct": cpu_busy_pct(c0, c1),
        "loadavg_before": load1,
        "wrk": result.script,
    }


def combine_hits(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One server's hit figure over its wrk runs (A B B A): the mean req/s, p50 and p99
    (each run is kept under `runs`), the worst p99, and errors and renders summed."""

    def mean(key: str) -> float:
        return round(sum(r[key] for r in runs) / len(runs), 2)

    return {
        "rps": round(sum(r["rps"] for r in runs) / len(runs), 1),
        "p50_ms": mean("p50_ms"),
        "p90_ms": mean("p90_ms"),
        "p99_ms": mean("p99_ms"),
        "p99_ms_worst": max(r["p99_ms"] for r in runs),
        "max_ms": max(r["max_ms"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "non2xx": sum(r["non2xx"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "renders": sum(r["renders"] or 0 for r in runs),
        "cpu_pct": round(sum(r["cpu_pct"] for r in runs) / len(runs)),
        "warm_check": {"errors": sum(r["warm_check"]["errors"] for r in runs),
                       "first_error": next((r["warm_check"]["first_error"] for r in runs
                                            if r["warm_check"]["first_error"]), None)},
        "rps_runs": [r["rps"] for r in runs],
        "p99_ms_runs": [r["p99_ms"] for r in runs],
        "loadavg_runs": [r["loadavg_before"] for r in runs],
        "runs": list(runs),
    }  # fmt: skip


CPU_GROUPS = ("mapserv", "apache2", "memcached")  # the peers' processes, by name
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(target: Target) -> dict[str, int]:
    """utime + stime (clock ticks) of the target's own processes (`tileserver <kind>`), of the
    peers' MapServer, Apache (by configuration file) and Memcached processes."""
    tree = target.processes() if target.processes is not None else []
    ours = {pid: process_kind(pid, tree[0], 2) for pid in tree}
    ticks: Counter[str] = Counter()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            used = int(fields[11]) + int(fields[12])  # utime, stime
            if int(entry.name) in ours:
                group = f"tileserver {ours[int(entry.name)]}"
            elif comm == "apache2":
                args = (entry / "cmdline").read_bytes().split(b"\0")
                conf = next((Path(a.decode()).stem for a in args if a.endswith(b".conf")), "")
                group = f"apache2 {conf}".strip()
            elif comm in CPU_GROUPS:
                group = comm
            else:
                continue
        except (OSError, ValueError):
            continue
        ticks[group] += used
    return dict(ticks)


def cpu_seconds(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """CPU seconds each group used in between (processes gone meanwhile are not counted)."""
    return {
        group: round((after[group] - before.get(group, 0)) / CLOCK_TICKS, 2)
        for group in sorted(after)
        if after[group] != before.get(group, 0)
    }


def run_cold(target: Target, s: Settings) -> dict[str, Any]:
    urls = expand(target.template, cold_tiles())
    target.flush()
    time.sleep(s.pause)
    r0, c0 = render_count(target.renders), cpu_times()
    u0 = render_count(target.upstream)
    p0 = process_cpu(target)
    fetched = fetch_all(urls, s.cold_conc)
    c1 = cpu_times()
    p1 = process_cpu(target)
    renders, durations = render_ms_since(target.renders, r0)
    result = fetched.summary()
    result.update(
        cpu_pct=cpu_busy_pct(c0, c1),
        cpu_s=cpu_seconds(p0, p1),
        renders=renders,
        render_ms_mean=rounded(sum(durations) / len(durations)) if durations else None,
        render_ms_max=rounded(max(durations)) if durations else None,
    )
    if target.upstream is not None:
        upstream, upstream_ms = render_ms_since(target.upstream, u0)
        result.update(
            upstream_renders=upstream,
            upstream_ms_mean=rounded(sum(upstream_ms) / len(upstream_ms)) if upstream_ms else None,
        )
    return result


def run_single(target: Target, s: Settings) -> dict[str, Any]:
    """One tile of a cold metatile, after a flush, with nothing else in flight."""
    url = expand(target.template, [s.single_tile])[0]
    latencies: list[float] = []
    render_ms: list[float | None] = []
    renders_seen: list[int | None] = []
    upstream_ms: list[float | None] = []
    sources: Counter[str] = Counter()
    errors = 0
    for _ in range(s.single_repeats):
        r0, u0 = render_count(target.renders), render_count(target.upstream)

        def flush_and_pause() -> None:
            target.flush()
            time.sleep(s.pause)

        one = asyncio.run(_fetch_one_each([url], flush_and_pause))
        # the render line is written before the answer is sent; give a log buffer a moment
        time.sleep(0.05)
        renders, durations = render_ms_since(target.renders, r0)
        latencies += one.latencies_ms
        sources.update(one.sources)
        errors += one.errors
        renders_seen.append(renders)
        render_ms.append(durations[0] if len(durations) == 1 else None)
        if target.upstream is not None:
            _, upstream = render_ms_since(target.upstream, u0)
            upstream_ms.append(upstream[0] if len(upstream) == 1 else None)
    lat = sorted(latencies)
    known = [r for r in render_ms if r is not None]
    overhead = sorted(t - r for t, r in zip(latencies, render_ms, strict=True) if r is not None)
    upstream_known = sorted(u for u in upstream_ms if u is not None)
    extra: dict[str, Any] = {}
    if target.upstream is not None:
        extra = {
            "upstream": target.upstream.what,
            "upstream_ms": [rounded(u) for u in upstream_ms],
            "upstream_ms_p50": rounded(percentile(upstream_known, 50)),
            "upstream_ms_p99": rounded(percentile(upstream_known, 99)),
        }
    return {
        "url": url,
        "repeats": s.single_repeats,
        "errors": errors,
        "x_tile_source": dict(sources),
        "renders_per_request": renders_seen,
        "latencies_ms": [round(v, 1) for v in latencies],
        "render_ms": render_ms,
        "p50_ms": rounded(percentile(lat, 50)),
        "p99_ms": rounded(percentile(lat, 99)),
        "render_ms_p50": rounded(percentile(sorted(known), 50)),
        "render_ms_p99": rounded(percentile(sorted(known), 99)),
        "minus_render_p50_ms": rounded(percentile(overhead, 50)),
        "minus_render_p99_ms": rounded(percentile(overhead, 99)),
        **extra,
    }


# --- report ----------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: "-" for None, floats with `digits` decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def rss_cell(rss: dict[str, Any] | None) -> str:
    """The largest process of each kind, e.g. "render 120, worker 95, master 40" (MB)."""
    if not rss:
        return "-"
    kinds = sorted(rss["max_rss_mb_by_kind"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{kind} {mb:.0f}" for kind, mb in kinds)


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        "| server | hit req/s (runs; 1-min load before each) | hit p50/p99 ms (mean) "
        "| hit non-2xx / socket err | hit renders | hit CPU% "
        "| hit max RSS MB per process (kind) "
        "| cold tiles/s (median; runs) | cold p50/p99 ms | cold renders per run (min) "
        "| cold errors | render ms mean/max | 1 cold tile p50/p99 ms | its render p50/p99 ms "
        "| minus render p50/p99 ms |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for name, r in results.items():
        h, c, one = r.get("hits") or {}, r.get("cold") or {}, r.get("single") or {}
        runs = r.get("cold_runs", [])
        lines.append(
            f"| {name} | {fmt(h.get('rps'), 0)} ("
            + "/".join(fmt(x, 0) for x in h.get("rps_runs", []))
            + f"; load {', '.join(x.split()[0] for x in h.get('loadavg_runs', []))}) "
            f"| {fmt(h.get('p50_ms'))}/{fmt(h.get('p99_ms'))} "
            f"| {fmt(h.get('non2xx'))} / {fmt(h.get('socket_errors'))} "
            f"| {fmt(h.get('renders'))} "
            f"| {fmt(h.get('cpu_pct'))} "
            f"| {rss_cell(h.get('rss'))} "
            f"| {fmt(c.get('tiles_per_s'), 0)}; "
            + "/".join(fmt(x["tiles_per_s"], 0) for x in runs)
            + f" | {fmt(c.get('p50_ms'), 0)}/{fmt(c.get('p99_ms'), 0)} "
            f"| {'/'.join(fmt(x['renders']) for x in runs)} ({fmt(r.get('cold_min_metatiles'))}) "
            f"| {sum(x['errors'] for x in runs) if runs else '-'} "
            f"| {fmt(c.get('render_ms_mean'), 0)}/{fmt(c.get('render_ms_max'), 0)} "
            f"| {fmt(one.get('p50_ms'))}/{fmt(one.get('p99_ms'))} "
            f"| {fmt(one.get('render_ms_p50'), 0)}/{fmt(one.get('render_ms_p99'), 0)} "
            f"| {fmt(one.get('minus_render_p50_ms'))}/{fmt(one.get('minus_render_p99_ms'))} |"
        )
    return "\n".join(lines)


def ratios(
    results: dict[str, dict[str, Any]], ours: str, peers: Sequence[str] | None = None
) -> dict[str, dict[str, float | None]]:
    """ours ÷ each peer (default: every other server): >1 means ours is faster (latency:
    >1 means slower)."""

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    mine = results[ours]
    out = {}
    for name, r in results.items():
        if name == ours or (peers is not None and name not in peers):
            continue
        out[name] = {
            "hit_rps": div((mine.get("hits") or {}).get("rps"), (r.get("hits") or {}).get("rps")),
            "hit_p99_latency": div(
                (mine.get("hits") or {}).get("p99_ms"), (r.get("hits") or {}).get("p99_ms")
            ),
            "cold_tiles_per_s": div(
                (mine.get("cold") or {}).get("tiles_per_s"),
                (r.get("cold") or {}).get("tiles_per_s"),
            ),
            "single_cold_p50_latency": div(
                (mine.get("single") or {}).get("p50_ms"), (r.get("single") or {}).get("p50_ms")
            ),
        }
    return out


# --- main ------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "peers: NAME (preset: mapcache, mapproxy-mapnik, mapproxy-wms, from "
            "/work/shared/peers) or NAME=URL_TEMPLATE with {z} {x} {y}; a peer without a "
            "--peer-flush is flushed with memcached flush_all on 127.0.0.1:11211."
        ),
    )
    ap.add_argument("--workers", type=int, default=1, help="tileserver --workers (default 1)")
    ap.add_argument("--render-processes", type=int, help="tileserver --render-processes")
    ap.add_argument("--port", type=int, help="tileserver port (default: a free one)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tileserver configuration setting, e.g. server.hot_cache_mb=32 (repeatable)",
    )
    ap.add_argument(
        "--memcached", help="use this memcached HOST:PORT (e.g. the peers' 127.0.0.1:11211)"
    )
    ap.add_argument(
        "--wms-layer",
        action="store_true",
        help=f"add layer {WMS_LAYER} (type: wms over --wms-url, WMS layer osm) to tileserver's "
        "config and measure it as the target tileserver-wms",
    )
    ap.add_argument(
        "--wms-url", default=PEERS_WMS_URL, help="the WMS of --wms-layer (default %(default)s)"
    )
    ap.add_argument("--peer", action="append", default=[], help="NAME or NAME=URL_TEMPLATE")
    ap.add_argument(
        "--peer-flush",
        action="append",
        default=[],
        help="NAME=HOST:PORT (memcached flush_all), NAME=rmtree:DIR, NAME=none or NAME=SHELL_CMD",
    )
    ap.add_argument("--phases", default="hits,cold,single", help="comma list (default: all)")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--wrk-conn", type=int, default=32)
    ap.add_argument("--wrk-duration", default="10s")
    ap.add_argument(
        "--hit-rounds",
        type=int,
        default=2,
        help="wrk runs per server, in the order A B C, then C B A... (default 2: A B B A)",
    )
    ap.add_argument(
        "--nginx",
        action="store_true",
        help="also measure hits on nginx serving the warm set's tiles (tileserver's bytes) "
        "as static files: the ceiling of a hit on this machine (Debian nginx-light)",
    )
    ap.add_argument("--cold-conc", type=int, default=8)
    ap.add_argument("--cold-repeats", type=int, default=3, help="median shown (default 3)")
    ap.add_argument("--single-repeats", type=int, default=15)
    ap.add_argument(
        "--single-tile",
        default="{}/{}/{}".format(*SINGLE_TILE),
        help="Z/X/Y of the one cold tile (default %(default)s, y = row from the top)",
    )
    ap.add_argument(
        "--pause", type=float, default=2.5,
        help="seconds after each flush (more than server.hot_cache_max_age, 2 s by default)",
    )  # fmt: skip
    ap.add_argument(
        "--serve",
        action="store_true",
        help="only start memcached (unless --memcached) and tileserver, print where, and wait "
        "for Ctrl-C or SIGTERM (for the peers' bench.sh)",
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="default benchmarks/out")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = phases - {"hits", "cold", "single"}
    if unknown:
        raise SystemExit(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if "hits" in phases and not args.serve and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    z, x, y = (int(v) for v in args.single_tile.split("/"))
    peers = parse_peers(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = args.out / f"ondemand-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        args.wrk_threads, args.wrk_conn, args.wrk_duration, args.cold_conc, args.cold_repeats,
        args.single_repeats, (z, x, y), args.pause, run_dir, args.hit_rounds,
    )  # fmt: skip

    memcached: Memcached | None = None
    server: TileServer | None = None
    nginx: StaticNginx | None = None
    with sigterm_as_interrupt():
        try:
            if args.memcached:
                address = args.memcached
            else:
                memcached = Memcached(memory_mb=256)
                memcached.start()
                address = memcached.address
                log(f"memcached pid {memcached.proc.pid if memcached.proc else '?'} on {address}")
            port = args.port or free_port()
            config = bench_config(address)
            if args.wms_layer:
                add_wms_layer(config, args.wms_url)
            config = apply_settings(config, args.set)
            server = TileServer(
                address, run_dir, port, args.workers, args.render_processes, config=config
            )
            server.wait_ready()
            log(f"tileserver ready: workers {args.workers}, pids {server.worker_pids()}")
            if args.serve:
                print(f"tileserver {server.base}{TILESERVER_PATH}", flush=True)
                if args.wms_layer:
                    print(f"tileserver-wms {server.base}{TILESERVER_WMS_PATH}", flush=True)
                print(f"log {server.log_path}", flush=True)
                print(f"memcached {address}", flush=True)
                print(f"revision {git_revision()}", flush=True)
                print(f"pids master {server.proc.pid} workers {server.worker_pids()}", flush=True)
                while server.proc.poll() is None:
                    time.sleep(1)
                return 1
            flush, flush_desc = make_flush(address)
            ours = [
                Target(
                    "tileserver",
                    server.base + TILESERVER_PATH,
                    flush,
                    flush_desc,
                    tileserver_renders(server.log_path, "osm"),
                    processes=server.process_tree,
                )
            ]
            if args.wms_layer:
                ours.append(
                    Target(
                        "tileserver-wms",
                        server.base + TILESERVER_WMS_PATH,
                        flush,
                        flush_desc,
                        tileserver_renders(server.log_path, WMS_LAYER),
                        upstream=_wms_getmaps() if args.wms_url == PEERS_WMS_URL else None,
                        processes=server.process_tree,
                    )
                )
            if args.nginx:
                nginx = start_static_ceiling(server.base + TILESERVER_PATH, run_dir / "nginx")
                peers.append(
                    Target("nginx-static", nginx.base + TILESERVER_PATH, lambda: None,
                           "none (static files)", None, hits_only=True)
                )  # fmt: skip
            return run_all(args, settings, ours, peers, server, address)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        finally:
            if nginx is not None:
                nginx.stop()
                log("nginx stopped")
            if server is not None:
                server.stop()
                log("tileserver stopped")
            if memcached is not None:
                memcached.stop()
                log("memcached stopped")


def start_static_ceiling(template: str, prefix: Path) -> StaticNginx:
    """nginx serving, as files, the warm set's tiles with the bytes `template` answers."""
    import urllib.request

    files = {}
    for tile, url in zip(warm_tiles(), expand(template, warm_tiles()), strict=True):
        with urllib.request.urlopen(url, timeout=120) as r:
            body = r.read()
        if not body.startswith(PNG_SIGNATURE):
            raise RuntimeError(f"{url}: not a PNG, cannot serve it as the static ceiling")
        files[expand(TILESERVER_PATH, [tile])[0]] = body
    nginx = StaticNginx(prefix, files)
    log(f"nginx pid {nginx.proc.pid} on port {nginx.port} ({nginx.version}), "
        f"{len(files)} files, {sum(map(len, files.values()))} bytes")  # fmt: skip
    return nginx


# tileserver's target -> the peers that render the same way (the like-for-like pairs)
LIKE_FOR_LIKE = {"tileserver": ("mapproxy-mapnik",), "tileserver-wms": ("mapcache", "mapproxy-wms")}


def run_all(
    args: argparse.Namespace,
    s: Settings,
    ours: list[Target],
    peers: list[Target],
    server: TileServer,
    memcached: str,
) -> int:
    """Every phase for tileserver's targets (`ours`, one server) and the peers, then the report."""
    targets = [*ours, *peers]
    phases = {p.strip() for p in args.phases.split(",")}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = loadavg()
    revision = git_revision()
    results: dict[str, dict[str, Any]] = {
        t.name: {
            "template": t.template,
            "flush": t.flush_desc,
            "render_counter": t.renders.what if t.renders else None,
            "upstream_counter": t.upstream.what if t.upstream else None,
            "cold_min_metatiles": None if t.hits_only else metatiles(cold_tiles()),
        }
        for t in targets
    }
    for t in targets:  # probe: one warm tile answers
        status = http_status(expand(t.template, warm_tiles()[:1])[0])
        if status != 200:
            raise SystemExit(f"{t.name}: probe request answered {status}")
    if "hits" in phases:
        # A B C C B A (A B B A for two servers): a drift of the machine's load during the
        # phase hits every server alike, and each figure is the mean of its runs
        hit_runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        rss_runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in ours}
        for rnd in range(s.hit_rounds):
            for t in targets if rnd % 2 == 0 else targets[::-1]:
                log(f"hits {rnd + 1}/{s.hit_rounds}: {t.name} (load {loadavg()})")
                if t in ours:  # the memory of every process of the server, under this load
                    with RssSampler(server.proc.pid, args.workers) as sampler:
                        run = run_hits(t, s)
                    rss_runs[t.name].append(sampler.summary())
                else:
                    run = run_hits(t, s)
                log(f"  {run['rps']:.0f} req/s, p99 {run['p99_ms']:.1f} ms")
                hit_runs[t.name].append(run)
        for t in targets:
            hits = combine_hits(hit_runs[t.name])
            if t in ours:
                hits["rss"] = merge_rss(rss_runs[t.name])
                log(f"{t.name}: max RSS MB per process: {rss_cell(hits['rss'])}")
            results[t.name]["hits"] = hits
    renderers = [t for t in targets if not t.hits_only]
    if "cold" in phases:
        for rep in range(s.cold_repeats):
            for t in renderers:  # interleaved, so that drift hits every server alike
                log(f"cold {rep + 1}/{s.cold_repeats}: {t.name}")
                results[t.name].setdefault("cold_runs", []).append(run_cold(t, s))
                log(f"{t.name}: CPU s of the cold run: {results[t.name]['cold_runs'][-1]['cpu_s']}")
        for t in renderers:
            runs = results[t.name]["cold_runs"]
            results[t.name]["cold"] = sorted(runs, key=lambda r: r["tiles_per_s"])[len(runs) // 2]
    if "single" in phases:
        for t in renderers:
            log(f"single cold tile x{s.single_repeats}: {t.name}")
            results[t.name]["single"] = run_single(t, s)

    peer_names = [t.name for t in peers]
    ratio_tables = {t.name: ratios(results, t.name, peer_names) if peers else {} for t in ours}
    like_for_like = {
        f"{mine} ÷ {peer}": ratio_tables[mine][peer]
        for mine, theirs in LIKE_FOR_LIKE.items()
        for peer in theirs
        if mine in ratio_tables and peer in ratio_tables[mine]
    }
    rss = merge_rss([results[t.name]["hits"]["rss"] for t in ours if "hits" in results[t.name]])
    report: dict[str, Any] = {
        **run_header(started, load_before),
        "tileserver": {
            "revision": revision,
            "command": " ".join(server.command),
            "workers": args.workers,
            "render_processes": args.render_processes,
            "memcached": memcached,
            "wms_layer": WMS_LAYER if args.wms_layer else None,
            "wms_url": args.wms_url if args.wms_layer else None,
            "log": str(server.log_path),
            "config": str(server.config_path),
        },
        "settings": {
            "tileserver_set": list(args.set),
            "wrk": f"-t{s.wrk_threads} -c{s.wrk_conn} -d{s.wrk_duration}",
            "hit_rounds": s.hit_rounds,
            "hit_order": "A B C.. then ..C B A, alternating",
            "cold_concurrency": s.cold_conc,
            "cold_repeats": s.cold_repeats,
            "single_repeats": s.single_repeats,
            "single_tile_zxy": list(s.single_tile),
            "pause_s": s.pause,
            "warm_tiles": len(warm_tiles()),
            "cold_tiles": len(cold_tiles()),
            "rss_interval_s": RSS_INTERVAL_S,
        },
        "results": results,
        "rss_during_hits": rss,
        "ratios_tileserver_over_peer": ratio_tables.get("tileserver", {}),
        "ratios_tileserver_wms_over_peer": ratio_tables.get("tileserver-wms", {}),
        "ratios_like_for_like": like_for_like,
    }
    (s.run_dir / "result.json").write_text(json.dumps(report, indent=1) + "\n")

    print(f"\n{report['command']}")
    print(f"{started} .. {report['finished_utc']}; load {load_before} -> {loadavg()}; "
          f"tileserver --workers {args.workers} --render-processes "
          f"{args.render_processes or 'default'}; memcached {memcached}; "
          f"revision {revision}\n")  # fmt: skip
    print(table(results))
    for mine, table_ in ratio_tables.items():
        for name, r in table_.items():
            same = " (like for like)" if name in LIKE_FOR_LIKE.get(mine, ()) else ""
            print(
                f"{mine} ÷ {name}{same}: hit req/s {fmt(r['hit_rps'], 2)}, "
                f"hit p99 latency {fmt(r['hit_p99_latency'], 2)}, "
                f"cold tiles/s {fmt(r['cold_tiles_per_s'], 2)}, "
                f"one-cold-tile p50 latency {fmt(r['single_cold_p50_latency'], 2)}"
            )
    if rss:
        print(
            f"tileserver RSS during the hit phases (every {RSS_INTERVAL_S} s, "
            f"{rss['samples']} samples), max per process: "
            + ", ".join(f"{p['kind']} {p['max_rss_mb']:.0f} MB" for p in rss["processes"])
        )
    print(f"\nJSON and logs: {s.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
