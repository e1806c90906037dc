"""Soak: the benchmark's load for minutes, watching every process for leaks.

Starts its own memcached and `tileserver serve --workers 2` (bench_ondemand's helpers and
configuration), fetches the 200-tile warm set and the 847 cold tiles once, then runs
`wrk -t2 -c32 --timeout 10s` over all of them for `--duration` seconds (default 300). The
`osm` layer's `expires` is lowered (default 0.02 h = 72 s), so tiles keep expiring and
being rendered again during the whole run: the render processes work too, not only the
Memcached hits. Every `--interval` seconds it samples, for every process (master,
workers, render processes, memcached), the resident memory (VmRSS of /proc/PID/status)
and the open file descriptors (/proc/PID/fd).

Checks, each printed PASS or FAIL (exit status 1 if one fails):

  rss      per process, the floor (least) RSS of the last `--tail` seconds is at most
           `--rss-tolerance` % (10) above its floor in the first `--tail` seconds after
           the warm-up (`--warmup` seconds): a leak raises the floor, while a render
           under way when a sample is taken only lifts that sample (a metatile's
           buffers, freed after it)
  fds      per process, no more open descriptors in the last `--tail` seconds than in the
           first `--tail` seconds after the warm-up
  procs    the same processes from the warm-up to the end (none died, none was restarted)
  http     wrk saw no non-2xx answer and no socket error (connect, read, write, timeout)
  log      tileserver logged no ERROR line and no "memcached unavailable"

  .venv/bin/python benchmarks/soak.py                       # 5 minutes
  .venv/bin/python benchmarks/soak.py --duration 20 --interval 2 --warmup 6 --tail 6

A table goes to stdout; result.json, samples.csv, the config, the log and wrk's output
to benchmarks/out/soak-<time>/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_ondemand import (  # noqa: E402
    OUT_DIR,
    TILESERVER_PATH,
    WRK_SCRIPT,
    TileServer,
    bench_config,
    cold_tiles,
    descendants,
    expand,
    fetch_all,
    fmt,
    git_revision,
    loadavg,
    log,
    process_kind,
    rss_kb,
    run_header,
    sigterm_as_interrupt,
    warm_tiles,
)
from wrk_output import parse_wrk  # noqa: E402

from tests.support.daemons import Memcached, free_port  # noqa: E402

# --- processes ---------------------------------------------------------------------------


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Track:
    """The samples of one process: (seconds since the load started, RSS kB, fds)."""

    pid: int
    role: str
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[tuple[float, int, int]]:
        return [s for s in self.samples if start <= s[0] < end]


def sample(tracks: dict[int, Track], pids: dict[int, str], t: float) -> None:
    for pid, name in pids.items():
        rss, fds = rss_kb(pid), open_fds(pid)
        if rss is None or fds is None:
            continue
        tracks.setdefault(pid, Track(pid, name)).samples.append((round(t, 1), rss, fds))


# --- checks --------------------------------------------------------------------------------


@dataclass
class Row:
    role: str
    pid: int
    rss_start_mb: float | None  # floor of the first tail-long stretch after the warm-up
    rss_end_mb: float | None  # floor of the tail
    rss_max_mb: float
    rss_change_pct: float | None
    fds_start: int | None  # most in the first tail-long stretch after the warm-up
    fds_end: int | None  # most in the tail
    fds_max: int


def rows(tracks: dict[int, Track], warmup: float, tail_start: float, tail: float) -> list[Row]:
    out = []
    for track in sorted(tracks.values(), key=lambda t: (t.role, t.pid)):
        first = track.between(warmup, warmup + tail)
        last = track.between(tail_start, float("inf"))
        start = min(s[1] for s in first) if first else None
        end = min(s[1] for s in last) if last else None
        change = 100 * (end - start) / start if start and end is not None else None
        out.append(
            Row(
                track.role, track.pid,
                None if start is None else start / 1024, None if end is None else end / 1024,
                max(s[1] for s in track.samples) / 1024,
                None if change is None else round(change, 1),
                max((s[2] for s in first), default=None), max((s[2] for s in last), default=None),
                max(s[2] for s in track.samples),
            )
        )  # fmt: skip
    return out


def table(table_rows: list[Row]) -> str:
    head = (
        "| process | pid | RSS MB after warm-up (floor) | RSS MB end (floor) | change % "
        "| RSS MB max | fds after warm-up | fds end | fds max |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in table_rows:
        lines.append(
            f"| {r.role} | {r.pid} | {fmt(r.rss_start_mb)} | {fmt(r.rss_end_mb)} "
            f"| {fmt(r.rss_change_pct)} | {fmt(r.rss_max_mb)} | {fmt(r.fds_start)} "
            f"| {fmt(r.fds_end)} | {r.fds_max} |"
        )
    return "\n".join(lines)


def checks(
    table_rows: list[Row],
    tolerance: float,
    processes: tuple[set[int], set[int]],
    wrk: dict[str, Any],
    log_text: str,
) -> dict[str, tuple[bool, str]]:
    at_warmup, at_end = processes
    grown = [f"{r.role} {r.pid} {r.rss_change_pct:+.1f} %" for r in table_rows
             if r.rss_change_pct is not None and r.rss_change_pct > tolerance]  # fmt: skip
    more_fds = [f"{r.role} {r.pid} {r.fds_start} -> {r.fds_end}" for r in table_rows
                if r.fds_start is not None and r.fds_end is not None
                and r.fds_end > r.fds_start]  # fmt: skip
    changes = sorted(at_warmup ^ at_end)
    errors = [line for line in log_text.splitlines() if " ERROR " in line]
    unavailable = log_text.count("memcached unavailable")
    changes_text = ", ".join(map(str, changes))
    return {
        "rss": (not grown, ", ".join(grown) or f"every process within +{tolerance:g} %"),
        "fds": (not more_fds, ", ".join(more_fds) or "no process holds more descriptors"),
        "procs": (not changes, f"appeared or gone: {changes_text}" if changes else "unchanged"),
        "http": (
            wrk["non2xx"] == 0 and wrk["socket_errors"] == 0,
            f"{wrk['requests']} requests, {wrk['non2xx']} non-2xx, "
            f"{wrk['socket_errors']} socket errors",
        ),
        "log": (
            not errors and not unavailable,
            f"{len(errors)} ERROR lines, 'memcached unavailable' {unavailable} times"
            + (f"; first: {errors[0][:200]}" if errors else ""),
        ),
    }


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--duration", type=float, default=300, help="seconds of load (300)")
    ap.add_argument("--interval", type=float, default=10, help="seconds between samples (10)")
    ap.add_argument("--warmup", type=float, default=30, help="seconds before the baseline (30)")
    ap.add_argument("--tail", type=float, default=60, help="seconds compared at the end (60)")
    ap.add_argument("--rss-tolerance", type=float, default=10, help="percent (10)")
    ap.add_argument("--expires", type=float, default=0.02, help="hours, the osm layer's (0.02)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--render-processes", type=int, help="per worker (default: the server's)")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--wrk-conn", type=int, default=32)
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="default benchmarks/out")
    args = ap.parse_args(argv)
    if args.warmup + args.tail > args.duration:
        ap.error("--warmup + --tail must not exceed --duration")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    run_dir = args.out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    memcached = Memcached(memory_mb=256)
    server: TileServer | None = None
    with sigterm_as_interrupt():
        try:
            memcached.start()
            assert memcached.proc is not None
            config = bench_config(memcached.address)
            config["layers"]["osm"]["expires"] = args.expires
            server = TileServer(memcached.address, run_dir, free_port(), args.workers,
                                args.render_processes, config=config)  # fmt: skip
            server.wait_ready()
            return soak(args, run_dir, server, memcached.proc.pid)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        finally:
            if server is not None:
                server.stop()
            memcached.stop()


def soak(args: argparse.Namespace, run_dir: Path, server: TileServer, memcached_pid: int) -> int:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = loadavg()
    template = server.base + TILESERVER_PATH
    urls = expand(template, warm_tiles() + cold_tiles())
    log(f"fetching the {len(urls)} tiles once (renders the cold ones)")
    first = fetch_all(urls, 8)
    if first.errors:
        raise SystemExit(f"the first fetch had errors: {first.first_error}")
    paths_file = run_dir / "soak.paths"
    paths_file.write_text("".join(u.removeprefix(server.base) + "\n" for u in urls))
    command = ["wrk", f"-t{args.wrk_threads}", f"-c{args.wrk_conn}", f"-d{args.duration:g}s",
               "--timeout", "10s", "-s", str(WRK_SCRIPT), server.base]  # fmt: skip
    master = server.proc.pid

    def processes() -> dict[int, str]:
        found = {pid: process_kind(pid, master, args.workers) for pid in descendants(master)}
        found[memcached_pid] = "memcached"
        return found

    tracks: dict[int, Track] = {}
    at_warmup: set[int] = set()
    log(f"soak: {' '.join(command)} (samples every {args.interval:g} s)")
    begin = time.monotonic()
    wrk = subprocess.Popen(
        command,
        env={**os.environ, "WRK_PATHS": str(paths_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    next_sample = begin
    while wrk.poll() is None:
        now = time.monotonic()
        if now >= next_sample:
            pids = processes()
            sample(tracks, pids, now - begin)
            if not at_warmup and now - begin >= args.warmup:
                at_warmup = set(pids)
            next_sample += args.interval
            if int(now - begin) % 60 < args.interval:
                log(f"  {now - begin:.0f} s, load {loadavg()}")
        time.sleep(min(0.2, max(0.0, next_sample - time.monotonic())))
    elapsed = time.monotonic() - begin
    at_end = set(processes())
    sample(tracks, processes(), elapsed)
    output = wrk.stdout.read() if wrk.stdout else ""
    (run_dir / "wrk.txt").write_text(output)
    try:
        stats = parse_wrk(output).figures()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None

    tail_start = elapsed - args.tail
    table_rows = rows(tracks, args.warmup, tail_start, args.tail)
    log_text = server.log_text()
    results = checks(table_rows, args.rss_tolerance, (at_warmup, at_end), stats, log_text)
    with (run_dir / "samples.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["seconds", "role", "pid", "rss_kb", "fds"])
        for track in tracks.values():
            for t, rss, fds in track.samples:
                writer.writerow([t, track.role, track.pid, rss, fds])
    report = {
        **run_header(started, load_before),
        "revision": git_revision(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tileserver": " ".join(server.command),
        "wrk_command": f"WRK_PATHS={paths_file} " + " ".join(command),
        "paths": len(urls),
        "renders": log_text.count("rendered metatile"),
        "wrk": stats,
        "processes": [vars(r) for r in table_rows],
        "checks": {name: {"pass": ok, "detail": text} for name, (ok, text) in results.items()},
    }
    (run_dir / "result.json").write_text(json.dumps(report, indent=1) + "\n")

    print(f"\n{report['command']}")
    print(f"{started} .. {report['finished_utc']}; load {load_before} -> {loadavg()}; "
          f"{os.cpu_count()} cores; revision {report['revision']}")  # fmt: skip
    print(f"{report['wrk_command']}")
    print(f"{stats['requests']} requests, {stats['rps']:.0f} req/s, p50 {stats['p50_ms']:.1f} ms, "
          f"p99 {stats['p99_ms']:.1f} ms, max {stats['max_ms']:.0f} ms; "
          f"{report['renders']} metatiles rendered (first fetch included)\n")  # fmt: skip
    print(table(table_rows))
    print()
    for name, (ok, text) in results.items():
        print(f"{'PASS' if ok else 'FAIL'} {name}: {text}")
    print(f"\nJSON, samples and logs: {run_dir}")
    return 0 if all(ok for ok, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
