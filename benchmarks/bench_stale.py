"""A hot tile set crossing its expiry, with and without `stale_while_revalidate`.

Starts its own memcached and `tileserver serve --workers 2` on free loopback ports, with
the demo layer `osm` expiring after `--expires` seconds, once without stale windows
(`off`) and once with `stale_while_revalidate: 600` (`swr`), in the order off swr swr off
(a shared machine drifts: each variant is measured before and after the other). Each run
renders the hot set (every tile of 6 metatiles at z17 over Monaco, 288 tiles), then
keeps `--clients` keep-alive connections cycling through it until `--after` seconds past
the moment the set expires, and reports the answers' p50, p99 and maximum over the whole
run (p99.9 too, and how many took over 250 ms) and over the 2 s that follow the expiry,
the renders, and the stale answers. Every
answer must be a 200 PNG.

  .venv/bin/python benchmarks/bench_stale.py
  .venv/bin/python benchmarks/bench_stale.py --expires 8 --after 4 --clients 16

A table goes to stdout; JSON and server logs to benchmarks/out/stale-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the daemons and server helpers are shared with the tests

from tests.support.daemons import Memcached  # noqa: E402
from tests.support.server import TileServer, demo_config  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Every tile of 6 whole metatiles (8 x 8) at z17 inside the demo layer's limits.
HOT = [(17, row, col) for row in range(47784, 47800) for col in range(68232, 68250)]
BOUNDARY_WINDOW = 2.0  # seconds after the expiry whose answers are reported apart


@dataclass
class Answer:
    sent: float  # time.monotonic()
    seconds: float
    status: int
    source: str
    png: bool


@dataclass
class Result:
    variant: str
    requests: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    over_250ms: int  # answers that waited for a render, or nearly
    boundary_requests: int
    boundary_p99_ms: float
    boundary_max_ms: float
    renders: int
    stale_answers: int
    non_200: int
    loadavg_before: tuple[float, float, float]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def path(z: int, row: int, col: int) -> str:
    return f"/wmts/1.0.0/osm/default/epsg3857/{z}/{row}/{col}.png"


async def load(base: str, clients: int, until: float) -> list[Answer]:
    """`clients` connections, each asking for the next hot tile as soon as it has read the
    previous answer, until `until` (time.monotonic())."""
    answers: list[Answer] = []
    paths = [path(*t) for t in HOT]
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(index: int) -> None:
            step = index * len(paths) // clients
            while time.monotonic() < until:
                url = base + paths[step % len(paths)]
                step += 1
                sent = time.monotonic()
                async with session.get(url) as response:
                    body = await response.read()
                answers.append(
                    Answer(sent, time.monotonic() - sent, response.status,
                           response.headers.get("X-Tile-Source", ""),
                           body.startswith(PNG_SIGNATURE))
                )  # fmt: skip

        await asyncio.gather(*(client(i) for i in range(clients)))
    return answers


def run(variant: str, memcached: Memcached, out: Path, args: argparse.Namespace) -> Result:
    memcached.flush_all()
    overrides = {"expires": args.expires / 3600}
    if variant == "swr":
        overrides["stale_while_revalidate"] = 600
    config = demo_config(memcached.address, osm=overrides)
    workdir = out / variant
    workdir.mkdir(parents=True, exist_ok=True)
    server = TileServer(config, workdir, workers=2, render_processes=1)
    server.start()
    try:
        loadavg = os.getloadavg()
        # Render the hot set: one request per metatile, then every tile is cached. Its
        # tiles expire between first + expires - 1 (render times are whole seconds) and
        # rendered + expires.
        first = time.monotonic()
        for row in (47784, 47792):
            for col in (68232, 68240, 68248):
                assert server.get(path(17, row, col)).status == 200
        rendered = time.monotonic()
        renders = server.renders()
        answers = asyncio.run(load(server.base, args.clients, rendered + args.expires + args.after))
        renders = server.renders() - renders
    finally:
        server.stop()
    times = [a.seconds * 1000 for a in answers]
    start, end = first + args.expires - 1, rendered + args.expires + BOUNDARY_WINDOW
    boundary = [a.seconds * 1000 for a in answers if start <= a.sent < end]
    bad = [a for a in answers if a.status != 200 or not a.png]
    return Result(
        variant=variant,
        requests=len(answers),
        p50_ms=round(percentile(times, 0.5), 2),
        p99_ms=round(percentile(times, 0.99), 2),
        p999_ms=round(percentile(times, 0.999), 2),
        over_250ms=sum(t > 250 for t in times),
        max_ms=round(max(times), 2),
        boundary_requests=len(boundary),
        boundary_p99_ms=round(percentile(boundary, 0.99), 2),
        boundary_max_ms=round(max(boundary, default=float("nan")), 2),
        renders=renders,
        stale_answers=sum(a.source == "stale" for a in answers),
        non_200=len(bad),
        loadavg_before=loadavg,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expires", type=float, default=8, help="the layer's expiry, seconds")
    parser.add_argument("--after", type=float, default=4, help="seconds of load past it")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    out = HERE / "out" / time.strftime("stale-%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    memcached = Memcached(memory_mb=256)
    memcached.start()
    results: list[Result] = []
    try:
        for variant in ("off", "swr", "swr", "off"):
            results.append(run(variant, memcached, out, args))
            print(f"{variant}: {asdict(results[-1])}", file=sys.stderr)
    finally:
        memcached.stop()
    header = (
        "variant", "requests", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "> 250 ms", "boundary req",
        "boundary p99 ms", "boundary max ms", "renders", "stale", "non-200", "load",
    )  # fmt: skip
    print(" | ".join(header))
    for r in results:
        print(" | ".join(str(v) for v in (
            r.variant, r.requests, r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms, r.over_250ms,
            r.boundary_requests,
            r.boundary_p99_ms, r.boundary_max_ms, r.renders, r.stale_answers, r.non_200,
            " ".join(f"{x:.2f}" for x in r.loadavg_before),
        )))  # fmt: skip

    def mean(variant: str, field: str) -> float:
        values = [getattr(r, field) for r in results if r.variant == variant]
        return sum(values) / len(values)

    for field in ("p99_ms", "p999_ms", "boundary_p99_ms", "boundary_max_ms"):
        print(f"{field}: swr / off = {mean('swr', field) / mean('off', field):.3f}")
    summary = {
        "commit": commit,
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "hot_tiles": len(HOT),
        "args": vars(args),
        "results": [asdict(r) for r in results],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"details: {out}", file=sys.stderr)
    return 0 if all(r.non_200 == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
