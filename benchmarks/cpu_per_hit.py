"""CPU per cache hit: the CPU time the server's workers spend per answered hit, for one or
more checkouts of tileserver side by side, in the order A B B A (`--order`).

Each checkout (`--target NAME=DIR`, DIR with its own `.venv`) gets its own
`tileserver serve --workers N` on the benchmark's configuration (bench_ondemand's) and one
shared memcached; the 200 warm tiles are fetched twice, then each run is one
`wrk -t2 -c32 -d10s` through them. Around each run, the CPU time of every thread of every
worker (/proc/<pid>/task/*/schedstat: time on a CPU and time waiting on the run queue, in
ns) and of memcached is read: the figure is that CPU time divided by the answers wrk
counted. It is much less noisy than req/s on a shared machine, which sets how fast wrk is
scheduled as much as how fast the server answers. `--profile` records a py-spy profile of
one worker of each target during its first run.

  flock /tmp/tileserver-bench.lock .venv/bin/python benchmarks/cpu_per_hit.py \
      --target A=/work/wt/hits7-base --target B=/work/wt/hits7 --order ABBA

A table goes to stdout; JSON and the servers' logs to benchmarks/out/cpu-per-hit-<time>/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ondemand import (  # noqa: E402
    TILESERVER_PATH,
    WRK_SCRIPT,
    Memcached,
    apply_settings,
    bench_config,
    expand,
    fetch_all,
    free_port,
    loadavg,
    log,
    memcached_command,
    stop_process,
    wait_port,
    warm_tiles,
)
from wrk_output import parse_wrk  # noqa: E402


def user_system(pid: int) -> tuple[int, int]:
    """(user, system) CPU time in clock ticks summed over the threads of pid."""
    user = system = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns waiting on the run queue) summed over the threads of pid."""
    on_cpu = waited = 0
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:  # a thread gone meanwhile
            continue
        on_cpu += int(fields[0])
        waited += int(fields[1])
    return on_cpu, waited


def memcached_gets(address: str) -> int:
    """The keys memcached was asked for so far (its `cmd_get`)."""
    for line in memcached_command(address, "stats").splitlines():
        if line.startswith("STAT cmd_get "):
            return int(line.split()[2])
    raise RuntimeError(f"memcached {address}: no cmd_get in its stats")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def revision(checkout: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", "tileserver")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


@dataclass
class Server:
    name: str
    checkout: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    workers: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) if self.workers > 1 else [self.proc.pid]

    def stop(self) -> None:
        stop_process(self.proc, grace=30)


def start_server(
    name: str, checkout: Path, config: dict[str, Any], workers: int, run_dir: Path
) -> Server:
    config_path = run_dir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = run_dir / f"{name}.log"
    port = free_port()
    python = checkout / ".venv" / "bin" / "python"
    command = [str(python), "-m", "tileserver", "serve", "--config", str(config_path),
               "--port", str(port), "--workers", str(workers)]  # fmt: skip
    with log_path.open("ab") as out:
        proc = subprocess.Popen(command, cwd=checkout, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, checkout, port, proc, log_path, workers)
    if not wait_port(port, 120, proc):
        raise RuntimeError(f"{name} did not start:\n{log_path.read_text()[-3000:]}")
    deadline = time.monotonic() + 120
    while (
        log_path.read_text().count("render pool:") < workers or len(server.worker_pids()) < workers
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    log(f"{name}: {checkout} ({revision(checkout)}) on port {port}, pid {proc.pid}")
    return server


def run_once(
    server: Server, paths_file: Path, args: argparse.Namespace, memcached_pid: int | None,
    memcached_address: str, profile: Path | None,
) -> dict[str, Any]:  # fmt: skip
    command = ["wrk", f"-t{args.wrk_threads}", f"-c{args.wrk_conn}", f"-d{args.duration}",
               "--timeout", "10s", "-s", str(WRK_SCRIPT), server.base]  # fmt: skip
    workers = server.worker_pids()
    load = loadavg()
    before = {pid: schedstat(pid) for pid in workers}
    ticks_before = [user_system(pid) for pid in workers]
    mc_before = schedstat(memcached_pid) if memcached_pid else (0, 0)
    gets_before = memcached_gets(memcached_address)
    spy = None
    seconds = str(max(1, int(args.duration.rstrip("s")) - 2))
    if profile is not None and profile.suffix == ".data":  # perf: where the CPU goes by DSO
        spy = subprocess.Popen(
            ["perf", "record", "-F", "999", "-g", "-o", str(profile), "-p", str(workers[0]),
             "--", "sleep", seconds],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    elif profile is not None:
        spy = subprocess.Popen(
            [args.py_spy, "record", "-r", "250", "--native", "-f", "raw", "-o", str(profile),
             "-d", seconds, "-p", str(workers[0])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    wrk = subprocess.run(
        command, env={**os.environ, "WRK_PATHS": str(paths_file)}, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    after = {pid: schedstat(pid) for pid in workers}
    ticks_after = [user_system(pid) for pid in workers]
    mc_after = schedstat(memcached_pid) if memcached_pid else (0, 0)
    gets = memcached_gets(memcached_address) - gets_before
    if spy is not None:
        spy.wait()
    try:
        result = parse_wrk(wrk.stdout)
        stats = result.figures()
    except ValueError as exc:
        raise RuntimeError(f"{server.name}: {exc}\n{wrk.stderr}") from None
    requests = max(1, stats["requests"])
    cpu_ns = sum(after[p][0] - before[p][0] for p in workers)
    wait_ns = sum(after[p][1] - before[p][1] for p in workers)
    user = sum(a[0] - b[0] for a, b in zip(ticks_after, ticks_before, strict=True))
    system = sum(a[1] - b[1] for a, b in zip(ticks_after, ticks_before, strict=True))
    return {
        "target": server.name,
        "loadavg_before": load,
        "requests": stats["requests"],
        "rps": stats["rps"],
        "p99_ms": stats["p99_ms"],
        "non2xx": result.non2xx,
        "socket_errors": result.socket_errors,
        "worker_cpu_s": round(cpu_ns / 1e9, 3),
        "worker_runqueue_wait_s": round(wait_ns / 1e9, 3),
        "cpu_us_per_hit": round(cpu_ns / requests / 1000, 2),
        # the user share of the workers' CPU (ticks: 10 ms each, thousands per run)
        "user_share": round(user / max(1, user + system), 3),
        "memcached_us_per_hit": round((mc_after[0] - mc_before[0]) / requests / 1000, 2),
        "memcached_gets_per_hit": round(gets / requests, 4),
    }


def summary_table(runs: list[dict[str, Any]], revisions: dict[str, str]) -> str:
    lines = [
        "| # | target | load before | requests | req/s | p99 ms | worker CPU µs/hit "
        "| user share | memcached µs/hit | memcached gets/hit | run-queue wait s | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r['target']} | {r['loadavg_before']} | {r['requests']} | "
            f"{r['rps']:.0f} | {r['p99_ms']:.1f} | {r['cpu_us_per_hit']:.1f} | "
            f"{r['user_share']:.2f} | "
            f"{r['memcached_us_per_hit']:.2f} | {r['memcached_gets_per_hit']:.3f} | "
            f"{r['worker_runqueue_wait_s']:.1f} | "
            f"{r['non2xx'] + r['socket_errors']} |"
        )
    lines.append("")
    medians = {}
    for name, rev in revisions.items():
        mine = [r["cpu_us_per_hit"] for r in runs if r["target"] == name]
        if not mine:
            continue
        medians[name] = statistics.median(mine)
        lines.append(f"{name} ({rev}): CPU per hit {', '.join(f'{v:.1f}' for v in mine)} µs, "
                     f"median {medians[name]:.1f} µs")  # fmt: skip
    names = list(revisions)
    for name in names[1:]:
        if name in medians and names[0] in medians:
            lines.append(f"{name} ÷ {names[0]}: {medians[name] / medians[names[0]]:.3f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target", action="append", required=True,
        help="NAME=CHECKOUT (a tileserver worktree with its own .venv)",
    )  # fmt: skip
    parser.add_argument(
        "--order", default="ABBA", help="the runs, one target NAME per character (default ABBA)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a tileserver configuration setting (repeatable)")  # fmt: skip
    parser.add_argument("--duration", default="10s", help="each wrk run (default 10s)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-conn", type=int, default=32)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds before each run")
    parser.add_argument(
        "--profile", action="store_true",
        help="py-spy (--native, 250 Hz) one worker during each target's first run",
    )  # fmt: skip
    parser.add_argument("--py-spy", default="py-spy")
    parser.add_argument(
        "--perf", action="store_true", help="with --profile: perf record, not py-spy"
    )
    parser.add_argument("--out", type=Path, default=HERE / "out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets: dict[str, Path] = {}
    for spec in args.target:
        name, sep, checkout = spec.partition("=")
        if not sep or not (Path(checkout) / ".venv" / "bin" / "python").exists():
            raise SystemExit(f"--target {spec}: expected NAME=CHECKOUT with a .venv")
        targets[name] = Path(checkout).resolve()
    unknown = set(args.order) - set(targets)
    if unknown:
        raise SystemExit(f"--order names unknown target(s): {', '.join(sorted(unknown))}")
    run_dir = args.out / f"cpu-per-hit-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    memcached = Memcached(memory_mb=256)
    memcached.start()
    servers: dict[str, Server] = {}
    runs: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_at_start = loadavg()
    try:
        config = apply_settings(bench_config(memcached.address), args.set)
        for name, checkout in targets.items():
            # Each server its own key prefix: one cannot answer the other's tiles.
            own = {**config, "memcached": {**config["memcached"], "prefix": f"{name}/"}}
            servers[name] = start_server(name, checkout, own, args.workers, run_dir)
        paths: dict[str, Path] = {}
        for name, server in servers.items():
            urls = expand(server.base + TILESERVER_PATH, warm_tiles())
            for _ in range(2):
                result = fetch_all(urls, 8)
                if result.errors:
                    raise RuntimeError(f"{name}: warm set: {result.first_error}")
            paths[name] = run_dir / f"{name}.paths"
            paths[name].write_text("".join(u.removeprefix(server.base) + "\n" for u in urls))
        profiled: set[str] = set()
        for name in args.order:
            time.sleep(args.pause)
            profile = None
            if args.profile and name not in profiled:
                profiled.add(name)
                profile = run_dir / (f"{name}.perf.data" if args.perf else f"{name}.pyspy.txt")
            pid = memcached.proc.pid if memcached.proc else None
            run = run_once(servers[name], paths[name], args, pid, memcached.address, profile)
            log(f"{name}: {run['rps']:.0f} req/s, {run['cpu_us_per_hit']:.1f} µs CPU per hit, "
                f"load {run['loadavg_before']}")  # fmt: skip
            runs.append(run)
    finally:
        for server in servers.values():
            server.stop()
        memcached.stop()
    revisions = {name: revision(checkout) for name, checkout in targets.items()}
    result = {
        "started_utc": started,
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": loadavg(),
        "targets": {n: {"checkout": str(c), "revision": revisions[n]} for n, c in targets.items()},
        "runs": runs,
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    print(f"# {result['command']}\n# {started}, load {load_at_start} -> {result['loadavg_at_end']}")
    print(summary_table(runs, revisions))
    print(f"# output in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
