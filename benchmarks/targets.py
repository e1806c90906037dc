"""Issue 8's targets in one command: tileserver beside the peers, one table of ratios.

Runs, one after the other, against the peers of /work/shared/peers (start them first with
`/work/shared/peers/up.sh`; they are not stopped):

  bench_ondemand.py --workers 2 --wms-layer --peer mapcache --peer mapproxy-mapnik
                    --peer mapproxy-wms [--set ...]
      tileserver (layer osm, Mapnik) and tileserver-wms (layer osm_wms over the peers'
      MapServer WMS) in one server, and the three peers: Memcached hits, cold renders, one
      cold tile, and the RSS of every tileserver process during its hit phases
  bench_generate.py --zoom 12-18 --repeats 0 --peers --peer-concurrency 2 [--set ...]
      the peers' seed_bench.sh with tileserver and tileserver-wms added

then reads their result.json files and prints one table: each target of issue 8, the
tileserver figure, the peer figure, the ratio (or the distance in ms, or MB), the goal,
and whether it is met. Exit status 0 whether or not the goals are met (it is a report);
1 when a phase failed (a command failed, an error answer, a wrong render count); 2 when
a peer is down.

  .venv/bin/python benchmarks/targets.py                 # about 10 minutes
  .venv/bin/python benchmarks/targets.py --quick         # fewer repeats: checks the harness
  .venv/bin/python benchmarks/targets.py --set server.hot_cache_mb=32

Everything goes to benchmarks/out/targets-<time>/: targets.json (the table, the failures
and both results in full), targets.md (the table), and the two benchmarks' own folders.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_ondemand import OUT_DIR, fmt, git_revision, loadavg, log, run_header

HERE = Path(__file__).resolve().parent
PEER_PORTS = {
    "MapServer WMS": 8081,
    "MapCache": 8082,
    "MapProxy": 8083,
    "memcached": 11211,
    "PostGIS": 55432,
}
ONDEMAND_PEERS = ("mapcache", "mapproxy-mapnik", "mapproxy-wms")
GENERATE_ZOOMS = "12-18"
GENERATE_CONCURRENCY = 2
TILECLOUD_CHAIN_COLD_TILE_MS = 1500.0  # the figure for one cold tile
# One of the cold phase's metatiles (z18, 2112 px), asked of the peers' MapServer directly.
WARM_GETMAP = (
    "http://127.0.0.1:8081/wms?SERVICE=WMS&VERSION=1.1.1&REQUEST=GetMap&LAYERS=osm&STYLES="
    "&SRS=EPSG:3857&BBOX=827946.781128,5422729.425406,829207.992095,5423990.636373"
    "&WIDTH=2112&HEIGHT=2112&FORMAT=image/png"
)
MAPSERV_PROCESSES = 4  # FcgidMaxProcesses in the peers' conf/apache-wms.conf


@dataclass
class Row:
    """One line of the table."""

    target: str
    what: str
    ours: str
    peer: str
    figure: str  # ratio, ms distance or MB
    goal: str
    met: bool | None  # None: not measured, or no goal


# --- running the two benchmarks ------------------------------------------------------------


def peers_down() -> list[str]:
    down = []
    for name, port in PEER_PORTS.items():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        except OSError:
            down.append(f"{name} (127.0.0.1:{port})")
    return down


def mapserv_processes() -> int:
    count = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):  # gone meanwhile
            count += comm.read_text().strip() == "mapserv"
    return count


def warm_mapserver(rounds: int = 10) -> int:
    """mod_fcgid starts the peers' mapserv processes on demand, and a request that finds
    them all busy waits for one in steps of a second: after a fresh `up.sh` there is one
    process, and the first phase's GetMaps (tileserver's) would wait seconds that the
    later ones do not. Six GetMaps at once until all four processes are up; how many."""
    for _ in range(rounds):
        if mapserv_processes() >= MAPSERV_PROCESSES:
            break
        with ThreadPoolExecutor(6) as pool:
            list(
                pool.map(
                    lambda url: urllib.request.urlopen(url, timeout=60).read(), [WARM_GETMAP] * 6
                )
            )
    return mapserv_processes()


def run_phase(name: str, command: list[str], run_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Runs one benchmark (its progress on stderr, its stdout to <name>.out), and returns
    its exit status and the result.json it wrote under run_dir/<name>-<time>/."""
    log(f"{name}: {' '.join(command)}")
    before = set(run_dir.glob(f"{name}-*/result.json"))
    out = run_dir / f"{name}.out"
    t0 = time.perf_counter()
    with out.open("w") as f:
        rc = subprocess.run(command, stdout=f, env=env, check=False).returncode
    wall = round(time.perf_counter() - t0, 1)
    results = sorted(set(run_dir.glob(f"{name}-*/result.json")) - before)
    result = json.loads(results[-1].read_text()) if results else None
    log(f"{name}: exit {rc} after {wall} s; table in {out}")
    return {
        "command": " ".join(command),
        "rc": rc,
        "wall_s": wall,
        "stdout": str(out),
        "result_json": str(results[-1]) if results else None,
        "result": result,
    }


# --- the table ---------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def at_least(value: float | None, goal: float) -> bool | None:
    return None if value is None else value >= goal


def at_most(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def get(data: dict[str, Any] | None, *path: str) -> Any:
    """data[path[0]][path[1]]..., None where a step is missing."""
    node: Any = data
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def renders_text(runs: Sequence[dict[str, Any]] | None) -> str:
    return "/".join(fmt(r.get("renders")) for r in runs or []) or "-"


def ondemand_rows(report: dict[str, Any] | None) -> list[Row]:
    res = get(report, "results") or {}
    ts, wms = res.get("tileserver"), res.get("tileserver-wms")
    mapcache, mp_mapnik, mp_wms = (res.get(n) for n in ONDEMAND_PEERS)
    rows: list[Row] = []

    # 1. Memcached hits
    for name, mine in (("tileserver", ts), ("tileserver-wms", wms)):
        rps, peer_rps = get(mine, "hits", "rps"), get(mapcache, "hits", "rps")
        r = ratio(rps, peer_rps)
        rows.append(
            Row(
                "1",
                f"hit req/s, {name} ÷ MapCache (wrk -t2 -c32, 200 tiles)",
                fmt(rps, 0),
                fmt(peer_rps, 0),
                fmt(r, 2),
                "≥ 1.0",
                at_least(r, 1.0),
            )
        )
        p99, peer_p99 = get(mine, "hits", "p99_ms"), get(mapcache, "hits", "p99_ms")
        r = ratio(p99, peer_p99)
        rows.append(
            Row(
                "1",
                f"hit p99 ms, {name} ÷ MapCache",
                fmt(p99),
                fmt(peer_p99),
                fmt(r, 2),
                "≤ 1.0 (no worse)",
                at_most(r, 1.0),
            )
        )

    # 1b. the physical ceiling: nginx serving the same tiles as static files
    nginx = res.get("nginx-static")
    ceiling = get(nginx, "hits", "rps")
    for name, server in (("tileserver", ts), ("tileserver-wms", wms), ("MapCache", mapcache)):
        rps = get(server, "hits", "rps")
        rows.append(
            Row(
                "1",
                f"hit req/s, {name} ÷ nginx serving the same tiles as files (the ceiling)",
                fmt(rps, 0),
                fmt(ceiling, 0),
                fmt(ratio(rps, ceiling), 2),
                "(no goal)",
                None,
            )
        )

    # 2. cold on demand, like for like, with the minimum number of renders
    cold = [
        ("tileserver-wms", wms, "MapCache", mapcache, 1.5),
        ("tileserver-wms", wms, "MapProxy-WMS", mp_wms, None),
        ("tileserver", ts, "MapProxy-Mapnik", mp_mapnik, 2.0),
    ]
    for name, mine, peer_name, peer, goal in cold:
        tps, peer_tps = get(mine, "cold", "tiles_per_s"), get(peer, "cold", "tiles_per_s")
        r = ratio(tps, peer_tps)
        rows.append(
            Row(
                "2",
                f"cold tiles/s (847 tiles, median run), {name} ÷ {peer_name}",
                fmt(tps, 0),
                fmt(peer_tps, 0),
                fmt(r, 2),
                f"≥ {goal}" if goal else "(no goal)",
                at_least(r, goal) if goal else None,
            )
        )
    for name, mine, peer_name, peer in (
        ("tileserver-wms", wms, "MapCache", mapcache),
        ("tileserver", ts, "MapProxy-Mapnik", mp_mapnik),
    ):
        runs = get(mine, "cold_runs")
        minimum = get(mine, "cold_min_metatiles")
        exact = bool(runs) and all(r.get("renders") == minimum for r in runs)
        rows.append(
            Row(
                "2",
                f"cold metatile renders per run, {name} (peer: {peer_name})",
                renders_text(runs),
                renders_text(get(peer, "cold_runs")),
                "-",
                f"= {fmt(minimum)} every run",
                exact if runs else None,
            )
        )

    # 3. one cold tile: p50 ≤ the metatile's render time + 15 ms
    for name, mine, peer_name, peer in (
        ("tileserver-wms", wms, "MapCache", mapcache),
        ("tileserver", ts, "MapProxy-Mapnik", mp_mapnik),
    ):
        p50, render = get(mine, "single", "p50_ms"), get(mine, "single", "render_ms_p50")
        distance = round(p50 - render, 1) if p50 is not None and render is not None else None
        upstream = get(mine, "single", "upstream_ms_p50")
        ours = f"p50 {fmt(p50)}, its render p50 {fmt(render, 0)}"
        if upstream is not None:
            ours += f" (GetMap {fmt(upstream, 0)})"
        rows.append(
            Row(
                "3",
                f"one cold tile, ms: {name} p50 - its render p50 (peer: {peer_name} p50)",
                ours,
                fmt(get(peer, "single", "p50_ms")),
                f"{distance:+.1f} ms" if distance is not None else "-",
                "≤ +15 ms",
                at_most(distance, 15.0),
            )
        )
        if upstream is not None and p50 is not None:
            # the "about 85 ms over the WMS": the render time being the GetMap's
            rows.append(
                Row(
                    "3",
                    f"one cold tile, ms: {name} p50 - the MapServer GetMap p50 "
                    f"(peer: {peer_name} p50)",
                    f"p50 {fmt(p50)}, GetMap p50 {fmt(upstream, 0)}",
                    fmt(get(peer, "single", "p50_ms")),
                    f"{p50 - upstream:+.1f} ms",
                    "≤ +15 ms",
                    at_most(p50 - upstream, 15.0),
                )
            )
    p50s = [get(m, "single", "p50_ms") for m in (wms, ts)]
    worst = max((p for p in p50s if p is not None), default=None)
    r = ratio(worst, TILECLOUD_CHAIN_COLD_TILE_MS)
    rows.append(
        Row(
            "3",
            "one cold tile p50 ms, the slower layer ÷ TileCloud-chain's 1.5 s",
            fmt(worst),
            fmt(TILECLOUD_CHAIN_COLD_TILE_MS, 0),
            fmt(r, 2),
            "< 1.0, by far",
            None if r is None else r < 1.0,
        )
    )

    # 5. RSS per server process under the hit load
    rss = get(report, "rss_during_hits")
    top = get(rss, "max_rss_mb")
    kinds = get(rss, "max_rss_mb_by_kind") or {}
    rows.append(
        Row(
            "5",
            f"max RSS MB of one tileserver process under the hit load "
            f"({fmt(get(rss, 'samples'))} samples, every {fmt(get(rss, 'interval_s'))} s)",
            ", ".join(f"{k} {v:.0f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
            or "-",
            "-",
            f"{fmt(top, 0)} MB ({get(rss, 'max_rss_kind') or '-'})",
            "≤ 150 MB",
            at_most(top, 150.0),
        )
    )
    return rows


def generate_bench(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The seed_bench.sh run at GENERATE_CONCURRENCY."""
    for bench in get(report, "seed_bench") or []:
        if bench.get("concurrency") == GENERATE_CONCURRENCY:
            return dict(bench)
    return None


def generate_rows(report: dict[str, Any] | None) -> list[Row]:
    bench = generate_bench(report)
    seeders = get(bench, "seeders") or {}
    rows = []
    for name, peer_name, goal in (
        ("tileserver-wms", "mapcache-wms", 1.5),
        ("tileserver", "mapproxy-mapnik", 2.0),
    ):
        mine, peer = seeders.get(name), seeders.get(peer_name)
        tps, peer_tps = get(mine, "requested_tiles_per_s"), get(peer, "requested_tiles_per_s")
        r = ratio(tps, peer_tps)
        renders = "/".join(map(str, get(mine, "renders") or [])) or "-"
        peer_renders = "/".join(map(str, get(peer, "renders") or [])) or "-"
        rows.append(
            Row(
                "4",
                f"generation z{GENERATE_ZOOMS}, requested tiles/s (renders), {name} ÷ {peer_name}",
                f"{fmt(tps, 0)} ({renders})",
                f"{fmt(peer_tps, 0)} ({peer_renders})",
                fmt(r, 2),
                f"≥ {goal}",
                at_least(r, goal),
            )
        )
    return rows


def load_lines(ondemand: dict[str, Any] | None, generate: dict[str, Any] | None) -> list[str]:
    """The 1-minute load average before each measured run, in the order the runs went."""
    lines = []
    for name, r in (get(ondemand, "results") or {}).items():
        loads = get(r, "hits", "loadavg_runs") or []
        rps = get(r, "hits", "rps_runs") or []
        if loads:
            lines.append(
                f"- hits {name}: "
                + ", ".join(
                    f"{v:.0f} req/s at load {x.split()[0]}"
                    for v, x in zip(rps, loads, strict=False)
                )
            )
    bench = generate_bench(generate)
    for name, s in (get(bench, "seeders") or {}).items():
        runs = zip(s.get("wall_s_runs") or [], s.get("load1_before_runs") or [], strict=False)
        lines.append(
            f"- generation {name}: " + ", ".join(f"{w:.2f} s at load {x}" for w, x in runs)
        )
    return lines


def markdown(rows: Sequence[Row]) -> str:
    met = {True: "met", False: "NOT met", None: "-"}
    lines = [
        "| # | target | tileserver | peer | ratio / distance | goal | |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r.target):
        lines.append(
            f"| {r.target} | {r.what} | {r.ours} | {r.peer} | {r.figure} | {r.goal} "
            f"| {met[r.met]} |"
        )
    return "\n".join(lines)


# --- what counts as a failed phase ---------------------------------------------------------


def ondemand_problems(report: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(failures, warnings): errors anywhere fail; so do tileserver's wrong render counts;
    a peer's render count is only a warning (its log is shared with whoever uses it)."""
    failures: list[str] = []
    warnings: list[str] = []
    results = get(report, "results") or {}
    for name in ("tileserver", "tileserver-wms", *ONDEMAND_PEERS, "nginx-static"):
        if name not in results:
            failures.append(f"ondemand: {name} was not measured")
    for name, r in results.items():
        ours = name.startswith("tileserver")
        h = r.get("hits") or {}
        if h.get("non2xx") or h.get("socket_errors"):
            failures.append(
                f"ondemand {name} hits: {h.get('non2xx')} non-2xx, "
                f"{h.get('socket_errors')} socket errors"
            )
        if get(h, "warm_check", "errors"):
            failures.append(
                f"ondemand {name} hits: warm set errors: {get(h, 'warm_check', 'first_error')}"
            )
        if h.get("renders"):
            (failures if ours else warnings).append(
                f"ondemand {name} hits: {h['renders']} renders during wrk (expected 0)"
            )
        minimum = r.get("cold_min_metatiles")
        for i, run in enumerate(r.get("cold_runs") or [], 1):
            if run.get("errors"):
                failures.append(
                    f"ondemand {name} cold run {i}: {run['errors']} errors, "
                    f"first {run.get('first_error')}"
                )
            if run.get("renders") is not None and run["renders"] != minimum:
                (failures if ours else warnings).append(
                    f"ondemand {name} cold run {i}: {run['renders']} renders (minimum {minimum})"
                )
        single = r.get("single") or {}
        if single.get("errors"):
            failures.append(f"ondemand {name} single: {single['errors']} errors")
        seen = single.get("renders_per_request") or []
        if any(n is not None and n != 1 for n in seen):
            (failures if ours else warnings).append(
                f"ondemand {name} single: renders per request {seen} (expected 1 each)"
            )
    return failures, warnings


def generate_problems(report: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    failures: list[str] = []
    warnings: list[str] = []
    bench = generate_bench(report)
    if bench is None:
        return [f"generate: no seed_bench.sh run at concurrency {GENERATE_CONCURRENCY}"], []
    minimum = bench.get("min_renders")
    seeders = bench.get("seeders") or {}
    for name in ("tileserver", "tileserver-wms", "mapcache-wms", "mapproxy-mapnik"):
        if name not in seeders:
            failures.append(f"generate: {name} did not run")
    for name, s in seeders.items():
        ours = name.startswith("tileserver")
        if any(s.get("rc") or []):
            failures.append(f"generate {name}: exit status {s['rc']}")
        if s.get("requested_tiles_per_s") is None:
            failures.append(
                f"generate {name}: incomplete (requested tiles present "
                f"{s.get('requested_present')}/{bench.get('requested')})"
            )
        if any(n != minimum for n in s.get("renders") or []):
            (failures if ours else warnings).append(
                f"generate {name}: renders per run {s['renders']} (minimum {minimum})"
            )
    return failures, warnings


# --- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="fewer repeats, to check the harness")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tileserver configuration setting for both benchmarks (repeatable)",
    )
    ap.add_argument("--workers", type=int, default=2, help="tileserver --workers (default 2)")
    ap.add_argument("--render-processes", type=int, help="tileserver --render-processes")
    ap.add_argument(
        "--skip",
        choices=("ondemand", "generate"),
        action="append",
        default=[],
        help="leave one benchmark out (its targets show as not measured)",
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="default benchmarks/out")
    return ap.parse_args(argv)


def commands(args: argparse.Namespace, run_dir: Path) -> dict[str, list[str]]:
    sets = [x for item in args.set for x in ("--set", item)]
    ondemand = [
        sys.executable,
        str(HERE / "bench_ondemand.py"),
        "--workers",
        str(args.workers),
        "--wms-layer",
        "--nginx",
        *(x for p in ONDEMAND_PEERS for x in ("--peer", p)),
        "--out",
        str(run_dir),
        *sets,
    ]
    if args.render_processes:
        ondemand += ["--render-processes", str(args.render_processes)]
    generate = [
        sys.executable,
        str(HERE / "bench_generate.py"),
        "--zoom",
        GENERATE_ZOOMS,
        "--repeats",
        "0",
        "--peers",
        "--peer-concurrency",
        str(GENERATE_CONCURRENCY),
        "--peer-abba",
        "--peer-only",
        "tileserver-wms,mapcache-wms,tileserver,mapproxy-mapnik",
        "--out",
        str(run_dir),
        *sets,
    ]
    if args.quick:
        ondemand += [
            "--wrk-duration",
            "3s",
            "--cold-repeats",
            "1",
            "--single-repeats",
            "5",
        ]  # the pause after a flush stays longer than the hot tier's 2 s
        generate += ["--peer-repeats", "2"]
    else:
        generate += ["--peer-repeats", "4"]
    return {"ondemand": ondemand, "generate": generate}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    down = peers_down()
    if down:
        print(
            f"peers down: {', '.join(down)}; start them with /work/shared/peers/up.sh",
            file=sys.stderr,
        )
        return 2
    run_dir = args.out / f"targets-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    mapserv = warm_mapserver()
    log(f"the peers' MapServer: {mapserv} mapserv processes (of {MAPSERV_PROCESSES})")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = loadavg()
    env = dict(os.environ)
    if args.quick:
        env["SEED_PAUSE"] = "1"
    phases: dict[str, dict[str, Any]] = {}
    for name, command in commands(args, run_dir).items():
        if name not in args.skip:
            phases[name] = run_phase(name, command, run_dir, env)

    ondemand = get(phases, "ondemand", "result")
    generate = get(phases, "generate", "result")
    rows = ondemand_rows(ondemand) + generate_rows(generate)
    failures: list[str] = []
    warnings: list[str] = []
    for name, phase in phases.items():
        if phase["rc"] != 0 or phase["result"] is None:
            failures.append(f"{name}: exit status {phase['rc']}, see {phase['stdout']}")
    if "ondemand" in phases:
        failed, odd = ondemand_problems(ondemand)
        failures += failed
        warnings += odd
    if "generate" in phases:
        failed, odd = generate_problems(generate)
        failures += failed
        warnings += odd

    table = markdown(rows)
    report = {
        **run_header(started, load_before),
        "revision": git_revision(),
        "quick": args.quick,
        "mapserv_processes": mapserv,
        "tileserver_set": list(args.set),
        "workers": args.workers,
        "rows": [asdict(r) for r in sorted(rows, key=lambda r: r.target)],
        "met": sum(r.met is True for r in rows),
        "not_met": sum(r.met is False for r in rows),
        "failures": failures,
        "warnings": warnings,
        "phases": phases,
    }
    (run_dir / "targets.json").write_text(json.dumps(report, indent=1) + "\n")
    (run_dir / "targets.md").write_text(
        table + "\n\n" + "\n".join(load_lines(ondemand, generate)) + "\n"
    )

    print(f"\n{report['command']}")
    print(
        f"{started} .. {report['finished_utc']}; load {load_before} -> {loadavg()}; "
        f"revision {report['revision']}; tileserver --workers {args.workers}"
        + (f"; --set {' '.join(args.set)}" if args.set else "")
        + ("; --quick (fewer repeats: not for the record)" if args.quick else "")
        + "\n"
    )
    print(table)
    loads = load_lines(ondemand, generate)
    if loads:
        print("\nEach run, in order A B .. B A, with the 1-minute load average before it:")
        print("\n".join(loads))
    print(
        f"\n{report['met']} met, {report['not_met']} not met, "
        f"{sum(r.met is None for r in rows)} without a verdict"
    )
    for w in warnings:
        print(f"warning: {w}")
    for f in failures:
        print(f"FAILED: {f}")
    print(f"\nJSON, tables and logs: {run_dir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
