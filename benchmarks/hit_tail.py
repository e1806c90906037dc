"""The cache-hit phase alone, many times: is a hit p99 tail a rare event, and what is it?

Starts memcached and `tileserver serve` (the benchmark configuration of
bench_ondemand.py, default settings, `--workers 2`) once per checkout, fills the 200
warm tiles, then for each round runs, in the order A B B A (A B C C B A...) over the
targets:

  the warm set fetched twice (as bench_ondemand.py's hit phase), the pause, then
  `wrk --latency -t2 -c32 -d10s` cycling through the warm set (wrk_paths.lua)

and records for each wrk run: wrk's p50/p90/p99/max, the 1-minute load average before
and after, the machine's busy CPU, the processes of the whole machine that took the most
CPU during the run (who else ran), and for a tileserver target, from its access log, the
answers of each worker (the SO_REUSEPORT balance) and the longest pauses between two
access lines of one worker (a stalled event loop). `--gc-log` installs, through a
sitecustomize module on PYTHONPATH, a `gc.callbacks` hook in every tileserver process
that writes each collection of 2 ms or more (generation, duration) to a file: a
diagnostic, never a default.

Targets: `tileserver` (this checkout), `base=DIR` (tileserver from another checkout,
e.g. a baseline worktree, with its own server), `mapcache` (the peers' MapCache on
127.0.0.1:8082, /work/shared/peers). A tileserver target named `...-wN` runs N workers
(default `--workers`). A tileserver target whose name ends in `-setsid`
runs in a session of its own: Linux's autogroup scheduling (kernel.sched_autogroup_enabled)
then shares the CPU between it and wrk's session as between the peers and wrk, instead
of putting the server and wrk in one group.

  flock /tmp/tileserver-bench.lock .venv/bin/python benchmarks/hit_tail.py \
      --targets tileserver,mapcache --rounds 4
  flock /tmp/tileserver-bench.lock .venv/bin/python benchmarks/hit_tail.py \
      --targets tileserver,base=/work/wt/tail10-base --rounds 2 --gc-log

A table goes to stdout; JSON, wrk outputs and logs to benchmarks/out/hit-tail-<time>/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402
from bench_ondemand import (  # noqa: E402
    OUT_DIR,
    TILESERVER_PATH,
    WRK_SCRIPT,
    TileServer,
    bench_config,
    cpu_busy_pct,
    cpu_times,
    expand,
    fetch_all,
    free_port,
    git_revision,
    loadavg,
    log,
    peer_presets,
    warm_tiles,
)
from cpu_per_hit import schedstat  # noqa: E402
from wrk_output import parse_wrk, samples_from_pauses  # noqa: E402

from tests.support.daemons import Memcached  # noqa: E402

CLOCK_TICKS = 100  # USER_HZ on Linux
ACCESS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[(\d+)\] INFO tileserver\.access: ")
GAP_MS = 20.0  # pauses between two access lines of one worker reported from this length

# wrk_paths.lua, with the percentiles of the tail printed too
TAIL_LUA = """
dofile(os.getenv("WRK_BASE_SCRIPT"))
local base_done = done
function done(summary, latency, requests)
  base_done(summary, latency, requests)
  local parts = {}
  for _, p in ipairs({95, 98, 99, 99.5, 99.9, 99.99}) do
    parts[#parts + 1] = string.format('"%s": %.2f', p, latency:percentile(p) / 1000)
  end
  io.write("TAILJSON {" .. table.concat(parts, ", ") .. "}\\n")
end
"""

SITECUSTOMIZE = '''\
"""hit_tail.py --gc-log: every collection of 2 ms or more, to $HIT_TAIL_GC_DIR/gc-<pid>.log."""
import gc, os, time

_state = {"start": 0.0, "cpu": 0.0, "pid": 0, "file": None}


def _hit_tail_gc(phase, info):
    if phase == "start":
        _state["start"] = time.perf_counter()
        _state["cpu"] = time.thread_time()
        return
    ms = (time.perf_counter() - _state["start"]) * 1000
    cpu_ms = (time.thread_time() - _state["cpu"]) * 1000
    if ms < 2.0:
        return
    pid = os.getpid()
    if _state["pid"] != pid:
        _state["pid"] = pid
        _state["file"] = open(
            os.path.join(os.environ["HIT_TAIL_GC_DIR"], f"gc-{pid}.log"), "a", buffering=1
        )
    _state["file"].write(
        f"{time.time():.3f} {ms:.1f} cpu={cpu_ms:.1f} gen={info['generation']} "
        f"collected={info['collected']}\\n"
    )


gc.callbacks.append(_hit_tail_gc)
'''


@dataclass
class Target:
    name: str
    template: str
    server: TileServer | None = None
    root: Path | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)


def proc_cpu() -> dict[int, tuple[str, int]]:
    """utime + stime (ticks) and the name of every process of the machine."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        found[int(stat.parent.name)] = (name, int(fields[11]) + int(fields[12]))
    return found


def top_cpu(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]) -> list[str]:
    """The processes that took the most CPU between the two snapshots, 'name pid seconds'."""
    spent = []
    for pid, (name, ticks) in after.items():
        used = ticks - before.get(pid, (name, 0))[1]
        if used > 0:
            spent.append((used, f"{name} {pid} {used / CLOCK_TICKS:.2f}s"))
    return [text for _, text in sorted(spent, reverse=True)[:8]]


def cpu_pressure_us() -> int:
    """The machine's CPU pressure: the total µs some runnable task waited (PSI)."""
    for line in Path("/proc/pressure/cpu").read_text().splitlines():
        if line.startswith("some "):
            return int(line.rsplit("total=", 1)[1])
    return 0


def steal_ticks() -> int:
    with open("/proc/stat") as f:
        return int(f.readline().split()[8])


def waits(pids: list[int]) -> dict[int, tuple[int, int]]:
    found = {}
    for pid in pids:
        try:
            found[pid] = schedstat(pid)
        except OSError:
            continue
    return found


def connections_by_process(port: int) -> dict[str, int]:
    """The established connections on the local `port`, by the pid that holds them (ss):
    how SO_REUSEPORT spread wrk's connections over the workers."""
    text = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    found: dict[str, int] = defaultdict(int)
    for pid in re.findall(r"pid=(\d+)", text):
        found[pid] += 1
    return dict(found)


def access_figures(log_path: Path, t0: float, t1: float) -> dict[str, Any]:
    """From the access lines written between t0 and t1 (Unix time): each worker's answers
    and its longest pauses between two lines."""
    counts: dict[str, int] = defaultdict(int)
    last: dict[str, float] = {}
    gaps: list[tuple[float, str, str]] = []
    with log_path.open(errors="replace") as f:
        for line in f:
            m = ACCESS.match(line)
            if m is None:
                continue
            when = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if not t0 <= when <= t1:
                continue
            pid = m[2]
            counts[pid] += 1
            if pid in last and (when - last[pid]) * 1000 >= GAP_MS:
                gaps.append((round((when - last[pid]) * 1000), m[1][11:], pid))
            last[pid] = when
    gaps.sort(reverse=True)
    total = sum(counts.values()) or 1
    return {
        "answers_by_worker": dict(counts),
        "pauses_ms": [f"{ms} ms before {at} [{pid}]" for ms, at, pid in gaps[:8]],
        "pauses_over_50ms": sum(1 for ms, _, _ in gaps if ms >= 50),
        # each pause with the share of wrk's connections its worker held (its answers')
        "pauses": [(ms, counts[pid] / total) for ms, _, pid in gaps],
    }


def gc_figures(gc_dir: Path | None, t0: float, t1: float) -> list[str]:
    """The collections of 2 ms or more logged between t0 and t1 (--gc-log)."""
    if gc_dir is None:
        return []
    found = []
    for path in sorted(gc_dir.glob("gc-*.log")):
        pid = path.stem.removeprefix("gc-")
        for line in path.read_text().splitlines():
            when, ms, *rest = line.split()
            if t0 <= float(when) <= t1:
                found.append((float(ms), f"{ms} ms [{pid}] {' '.join(rest)}"))
    return [text for _, text in sorted(found, reverse=True)]


def run_wrk(
    target: Target, run_dir: Path, duration: str, pause: float, perf_sched: bool = False
) -> dict[str, Any]:
    urls = expand(target.template, warm_tiles())
    base = re.match(r"https?://[^/]+", target.template)
    assert base is not None
    fetch_all(urls, 8)
    check = fetch_all(urls, 8)
    paths = run_dir / f"{target.name}.paths"
    paths.write_text("".join(u.removeprefix(base[0]) + "\n" for u in urls))
    time.sleep(pause)
    lua = run_dir / "tail.lua"
    lua.write_text(TAIL_LUA)
    command = ["wrk", "--latency", "-t2", "-c32", f"-d{duration}", "--timeout", "10s",
               "-s", str(lua), base[0]]  # fmt: skip
    env = {"WRK_PATHS": str(paths), "WRK_BASE_SCRIPT": str(WRK_SCRIPT), "PATH": "/usr/bin:/bin"}
    workers = target.server.worker_pids() if target.server is not None else []
    n = len(target.runs) + 1
    perf = None
    if perf_sched:
        data = run_dir / f"{target.name}-{n}.perf.data"
        perf = subprocess.Popen(["perf", "sched", "record", "-g", "-o", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1)
    load = loadavg()
    c0, p0, w0, s0, st0 = cpu_times(), proc_cpu(), waits(workers), cpu_pressure_us(), steal_ticks()
    t0 = time.time()
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        time.sleep(1)  # wrk's connections are open
        connections = connections_by_process(target.server.port) if target.server else {}
        stdout, stderr = proc.communicate()
    wrk = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    t1 = time.time()
    p1, c1, w1, s1, st1 = proc_cpu(), cpu_times(), waits(workers), cpu_pressure_us(), steal_ticks()
    if perf is not None:
        perf.send_signal(2)
        perf.wait()
    (run_dir / f"{target.name}-{n}.wrk.txt").write_text(wrk.stdout + wrk.stderr)
    figures = parse_wrk(wrk.stdout).figures()
    run: dict[str, Any] = {
        "target": target.name,
        "started": time.strftime("%H:%M:%S", time.localtime(t0)),
        "load_before": load,
        "load_after": loadavg(),
        "cpu_pct": cpu_busy_pct(c0, c1),
        "rps": figures["rps"],
        "p50_ms": figures["p50_ms"],
        "p90_ms": figures["p90_ms"],
        "p99_ms": figures["p99_ms"],
        "max_ms": figures["max_ms"],
        "tail_ms": next(
            (
                json.loads(line[9:])
                for line in wrk.stdout.splitlines()
                if line.startswith("TAILJSON ")
            ),
            {},
        ),
        "cpu_pressure_pct": round((s1 - s0) / 1e4 / (t1 - t0)),
        "steal_s": (st1 - st0) / CLOCK_TICKS,
        "worker_runqueue_wait_s": [
            round((w1[pid][1] - w0[pid][1]) / 1e9, 2) for pid in w1 if pid in w0
        ],
        "worker_cpu_s": [round((w1[pid][0] - w0[pid][0]) / 1e9, 2) for pid in w1 if pid in w0],
        "connections_by_worker": connections,
        "errors": figures["non2xx"] + figures["socket_errors"] + check.errors,
        "top_cpu": top_cpu(p0, p1),
        "window": [t0, t1],
    }
    if target.server is not None:
        run.update(access_figures(target.server.log_path, t0, t1))
        interval_ms = figures["duration_s"] * 1000 / (figures["requests"] / 32)
        run["interval_ms"] = round(interval_ms, 3)
        run["samples_over_p99_from_pauses"] = samples_from_pauses(
            run["pauses"], 32, interval_ms, figures["p99_ms"]
        )
        run["samples_over_p99_measured"] = round(figures["requests"] * 0.01)
    target.runs.append(run)
    return run


def start_tileserver(
    name: str, root: Path, run_dir: Path, workers: int, session: bool = False
) -> TileServer:
    """tileserver from the checkout `root` (its own .venv) on a free port, on a memcached
    of its own; `session`: in a session of its own (as the peers run, started by their
    up.sh), so in a scheduler autogroup of its own, not in wrk's."""
    memcached = Memcached(memory_mb=256)
    memcached.start()
    workdir = run_dir / name
    workdir.mkdir()
    server = TileServer.__new__(TileServer)  # TileServer's fields, this checkout's command
    server.config_path = workdir / "tileserver.yaml"
    server.config_path.write_text(yaml.safe_dump(bench_config(memcached.address), sort_keys=False))
    server.log_path = workdir / "tileserver.log"
    server.port = free_port()
    server.workers = workers
    server.command = [str(root / ".venv" / "bin" / "python"), "-m", "tileserver", "serve",
                      "--config", str(server.config_path), "--port", str(server.port),
                      "--workers", str(workers)]  # fmt: skip
    server._log = server.log_path.open("ab")
    server.proc = subprocess.Popen(
        server.command, stdout=server._log, stderr=subprocess.STDOUT, cwd=root,
        start_new_session=session,
    )  # fmt: skip
    server.memcached = memcached  # type: ignore[attr-defined]
    server.wait_ready()
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="tileserver,mapcache")
    ap.add_argument("--rounds", type=int, default=2, help="A B B A is 2 rounds")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--pause", type=float, default=2.5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gc-log", action="store_true")
    ap.add_argument(
        "--perf-sched", action="store_true", help="perf sched record during each wrk run"
    )
    args = ap.parse_args()
    run_dir = OUT_DIR / f"hit-tail-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    gc_dir = None
    if args.gc_log:
        gc_dir = run_dir / "gc"
        gc_dir.mkdir()
        (gc_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        os.environ["PYTHONPATH"] = str(gc_dir)
        os.environ["HIT_TAIL_GC_DIR"] = str(gc_dir)
    targets: list[Target] = []
    try:
        for spec in args.targets.split(","):
            name, _, where = spec.partition("=")
            if name == "mapcache":
                targets.append(Target(name, peer_presets()["mapcache"][0]))
                continue
            root = Path(where).resolve() if where else HERE.parent
            session = name.endswith("-setsid")
            workers = re.search(r"-w(\d+)", name)
            count = int(workers[1]) if workers else args.workers
            server = start_tileserver(name, root, run_dir, count, session)
            log(f"{name}: {root} at {git_revision_of(root)}, pid {server.proc.pid}")
            targets.append(Target(name, server.base + TILESERVER_PATH, server, root))
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for rnd in range(args.rounds):
            for target in targets if rnd % 2 == 0 else targets[::-1]:
                run = run_wrk(target, run_dir, args.duration, args.pause, args.perf_sched)
                log(f"{target.name}: {run['rps']:.0f} req/s, p99 {run['p99_ms']} ms, "
                    f"max {run['max_ms']} ms, load {run['load_before']}; "
                    f"pauses {run.get('pauses_ms', [])[:3]}")  # fmt: skip
                run["gc"] = gc_figures(gc_dir, *run["window"])
    finally:
        for target in targets:
            if target.server is not None:
                target.server.stop()
                target.server.memcached.stop()  # type: ignore[attr-defined]
    report = {
        "started_utc": started,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "revisions": {t.name: git_revision_of(t.root) for t in targets if t.root},
        "runs": [r for rnd in zip(*(t.runs for t in targets), strict=True) for r in rnd],
    }
    (run_dir / "result.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{report['command']}\n{started} .. {report['finished_utc']}\n")
    print("| target | start | load before | CPU pressure % | req/s | p50 | p90 | p99 | p99.9 "
          "| max ms | worst pause | samples ≥ p99: from the pauses / 1 % | runqueue wait s "
          "| answers by worker | GC ≥ 2 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for target in targets:
        for r in target.runs:
            pauses = r.get("pauses_ms") or ["-"]
            print(f"| {r['target']} | {r['started']} | {r['load_before']} "
                  f"| {r['cpu_pressure_pct']} | {r['rps']:.0f} "
                  f"| {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} "
                  f"| {r['tail_ms'].get('99.9', '-')} | {r['max_ms']} "
                  f"| {pauses[0]} | {r.get('samples_over_p99_from_pauses', '-')} / "
                  f"{r.get('samples_over_p99_measured', '-')} "
                  f"| {r['worker_runqueue_wait_s'] or '-'} "
                  f"| {r.get('answers_by_worker', '-')} "
                  f"(connections {r.get('connections_by_worker') or '-'}) "
                  f"| {'; '.join(r['gc'][:3]) or '-'} |")  # fmt: skip
    print(f"\nJSON and logs: {run_dir}")
    return 0


def git_revision_of(root: Path | None) -> str | None:
    if root is None:
        return None
    try:
        command = ["git", "-C", str(root), "rev-parse", "--short", "HEAD"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return git_revision()


if __name__ == "__main__":
    sys.exit(main())
