"""Distributed generation benchmark: `generate_tiles --role worker` throughput with 1 and 2
worker processes on one queue (Redis, or SQS on moto's server), against `--role local`.

For each run: a fresh queue and an emptied folder store; `generate_tiles --role master`
enqueues the workload's metatiles (timed on its own), then W workers (`--role worker
--processes 1`, one render process each) start at once and take the jobs until the queue
is empty. The benchmark polls the queue every 20 ms, so the table shows:

  startup s   from starting the workers to the first job done (Python, config, the render
              process loading the Mapnik style)
  drain s     from starting the workers to the queue empty (nothing queued nor in flight)
  tiles/s     tiles written ÷ drain s (startup included: what a run costs)
  steady      tiles written after the first job ÷ (drain s - startup s): the rendering rate
  exit s      the workers' last exit (a worker waits 2 s for a job before it looks whether
              the queue is done)
  CPU s       user + system seconds of the workers and their render processes: what the
              work costs whatever else runs on the machine, so tiles per CPU s compares
              1 and 2 workers even on a busy machine
  busy %      how busy the whole machine's CPUs were (other sessions included)

and, as a baseline, `--role local --processes P` for P = 1, 2 (wall seconds, tiles/s). Each
configuration runs --repeats times, interleaved; the median run by drain s is shown, with
the ratio 2 ÷ 1 workers. The workload is bench_generate's, one level deeper: Monaco's land
bbox, zooms 12-19 (--zoom), layer `osm` (Mapnik, 8x8 metatiles): 3,550 tiles in 84 metatiles.

  .venv/bin/python benchmarks/bench_distributed.py                  # Redis (≈3 min)
  .venv/bin/python benchmarks/bench_distributed.py --backend sqs    # moto's SQS
  .venv/bin/python benchmarks/bench_distributed.py --repeats 1 --no-local

A table goes to stdout; JSON and logs to benchmarks/out/distributed-<time>/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from bench_generate import land_bbox_3857
from bench_ondemand import (
    OUT_DIR,
    cpu_busy_pct,
    cpu_times,
    demo_config,
    fmt,
    git_revision,
    loadavg,
    log,
    run_header,
)

# bench_ondemand puts the repository root on sys.path: tests.support is importable after it.
from tests.support.moto import REGION, MotoServer
from tests.support.redis import RedisServer

LAYER = "osm"
ZOOMS = "12-19"
POLL_S = 0.02


class Queue:
    """The benchmark's queue daemon and a way to read its job count (queued + in flight)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.redis: RedisServer | None = None
        self.moto: MotoServer | None = None
        self.env = dict(os.environ)

    def start(self) -> None:
        if self.backend == "redis":
            self.redis = RedisServer()
            self.redis.start()
            log(f"redis-server on {self.redis.url}")
        else:
            self.moto = MotoServer()
            self.moto.start()
            self.env.update(self.moto.env())
            log(f"moto_server (SQS) on {self.moto.endpoint_url}")

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.moto is not None:
            self.moto.stop()

    def section(self, name: str) -> dict[str, Any]:
        """The config section of a fresh queue called name."""
        if self.redis is not None:
            return {"redis": {"url": self.redis.url, "stream": name, "claim_timeout": 60}}
        assert self.moto is not None
        return {
            "sqs": {
                "queue": name,
                "region": REGION,
                "endpoint_url": self.moto.endpoint_url,
                "visibility_timeout": 60,
                "counts_delay": 0,
            }
        }

    def jobs(self, name: str) -> int:
        """Jobs queued or in flight."""
        if self.redis is not None:
            answer = self.redis.command("XLEN", name)  # acknowledged entries are deleted
            return int(answer.strip().lstrip(":"))
        assert self.moto is not None
        sqs = self.moto.client("sqs")
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
            return sum(int(found[n]) for n in names)
        finally:
            sqs.close()


def write_config(run_dir: Path, name: str, store: Path, queue: dict[str, Any]) -> Path:
    data = demo_config()
    data.pop("memcached", None)
    data["caches"] = {"bench": {"type": "filesystem", "folder": str(store)}}
    data["generation"] = {"default_cache": "bench"}
    data.update(queue)
    path = run_dir / f"tileserver-{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def generate(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tileserver", "generate", "-c", str(config), *args]


def children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes and their own children
    (the workers and their render processes), so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.png")) if folder.exists() else 0


def run_distributed(
    queue: Queue, run_dir: Path, workers: int, index: int, zooms: str
) -> dict[str, Any]:
    name = f"bench-{workers}w-{index}-{uuid.uuid4().hex[:6]}"
    store = run_dir / "store"
    shutil.rmtree(store, ignore_errors=True)
    config = write_config(run_dir, name, store, queue.section(name))
    selection = ["--layer", LAYER, "--zoom", zooms, "--bbox", land_bbox_3857()]
    started = time.monotonic()
    master = subprocess.run(
        generate(config, "--role", "master", *selection),
        env=queue.env,
        capture_output=True,
        text=True,
        check=False,
    )
    enqueue_s = time.monotonic() - started
    if master.returncode != 0:
        raise SystemExit(f"the master failed: {master.stderr}")
    total = queue.jobs(name)
    subprocess.run(["sync"], check=False)
    time.sleep(1)
    cpu_before, children_before = cpu_times(), children_cpu_s()
    start = time.monotonic()
    logs = [open(run_dir / f"{name}-worker{i}.log", "w") for i in range(workers)]  # noqa: SIM115
    processes = [
        subprocess.Popen(
            generate(config, "--role", "worker", "--processes", "1"),
            env=queue.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        for out in logs
    ]
    first_done = drained = None
    first_tiles = 0
    while drained is None:
        left = queue.jobs(name)
        now = time.monotonic()
        if first_done is None and left < total:
            first_done, first_tiles = now, count_files(store)
        if left == 0:
            drained = now
        elif all(p.poll() is not None for p in processes):
            raise SystemExit(f"the workers exited with {left} jobs left: see {run_dir}")
        time.sleep(POLL_S)
    cpu_busy = cpu_busy_pct(cpu_before, cpu_times())
    for process in processes:
        process.wait(timeout=120)
    exited = time.monotonic()
    cpu_s = children_cpu_s() - children_before
    for out in logs:
        out.close()
    tiles = count_files(store)
    assert first_done is not None
    drain_s = drained - start
    startup_s = first_done - start
    return {
        "workers": workers,
        "jobs": total,
        "tiles": tiles,
        "enqueue_s": round(enqueue_s, 2),
        "startup_s": round(startup_s, 2),
        "drain_s": round(drain_s, 2),
        "exit_s": round(exited - start, 2),
        "tiles_per_s": round(tiles / drain_s, 1),
        "steady_tiles_per_s": round((tiles - first_tiles) / max(0.01, drain_s - startup_s), 1),
        "cpu_busy_pct": cpu_busy,
        "cpu_s": round(cpu_s, 2),
        "tiles_per_cpu_s": round(tiles / cpu_s, 1),
        "exit_codes": [p.returncode for p in processes],
    }


def run_local(queue: Queue, run_dir: Path, processes: int, zooms: str) -> dict[str, Any]:
    store = run_dir / "store"
    shutil.rmtree(store, ignore_errors=True)
    name = f"local-{processes}p-{uuid.uuid4().hex[:6]}"
    config = write_config(run_dir, name, store, {})
    state = run_dir / f"{name}.state"
    subprocess.run(["sync"], check=False)
    time.sleep(1)
    cpu_before, children_before = cpu_times(), children_cpu_s()
    start = time.monotonic()
    result = subprocess.run(
        generate(
            config,
            "--layer",
            LAYER,
            "--zoom",
            zooms,
            "--bbox",
            land_bbox_3857(),
            "--processes",
            str(processes),
            "--quiet",
            "--state-file",
            str(state),
        ),
        env=queue.env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - start
    cpu_s = children_cpu_s() - children_before
    if result.returncode != 0:
        raise SystemExit(f"generate_tiles failed: {result.stderr}")
    tiles = count_files(store)
    return {
        "processes": processes,
        "tiles": tiles,
        "wall_s": round(wall, 2),
        "tiles_per_s": round(tiles / wall, 1),
        "cpu_busy_pct": cpu_busy_pct(cpu_before, cpu_times()),
        "cpu_s": round(cpu_s, 2),
        "tiles_per_cpu_s": round(tiles / cpu_s, 1),
    }


def median_run(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r[key])
    return ordered[(len(ordered) - 1) // 2]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("redis", "sqs"), default="redis")
    parser.add_argument("--workers", default="1,2", help="worker counts (default: 1,2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--zoom", default=ZOOMS, help=f"levels (default: {ZOOMS})")
    parser.add_argument("--no-local", action="store_true", help="no --role local baseline")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = loadavg()
    run_dir = (args.out / f"distributed-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    queue = Queue(args.backend)
    distributed: dict[int, list[dict[str, Any]]] = {w: [] for w in counts}
    local: dict[int, list[dict[str, Any]]] = {p: [] for p in counts}
    try:
        queue.start()
        for index in range(args.repeats):
            for workers in counts:
                run = run_distributed(queue, run_dir, workers, index, args.zoom)
                log(f"{workers} worker(s): {run}")
                distributed[workers].append(run)
            if not args.no_local:
                for processes in counts:
                    run = run_local(queue, run_dir, processes, args.zoom)
                    log(f"local --processes {processes}: {run}")
                    local[processes].append(run)
    finally:
        queue.stop()
        shutil.rmtree(run_dir / "store", ignore_errors=True)

    print(
        f"\n{args.backend}: {LAYER}, zooms {args.zoom}, Monaco's land bbox, median of "
        f"{args.repeats} run(s) by drain s\n"
    )
    print(
        "| run | jobs | tiles | enqueue s | startup s | drain s | tiles/s | steady tiles/s "
        "| exit s | CPU s | tiles per CPU s | machine busy % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    shown: dict[int, dict[str, Any]] = {}
    for workers in counts:
        r = shown[workers] = median_run(distributed[workers], "drain_s")
        print(
            f"| {workers} worker(s) | {r['jobs']} | {r['tiles']} | {fmt(r['enqueue_s'], 2)} | "
            f"{fmt(r['startup_s'], 2)} | {fmt(r['drain_s'], 2)} | {fmt(r['tiles_per_s'])} | "
            f"{fmt(r['steady_tiles_per_s'])} | {fmt(r['exit_s'], 2)} | {fmt(r['cpu_s'])} | "
            f"{fmt(r['tiles_per_cpu_s'])} | {r['cpu_busy_pct']} |"
        )
    local_shown: dict[int, dict[str, Any]] = {}
    if not args.no_local:
        for processes in counts:
            r = local_shown[processes] = median_run(local[processes], "wall_s")
            print(
                f"| local --processes {processes} | - | {r['tiles']} | - | - | "
                f"{fmt(r['wall_s'], 2)} | {fmt(r['tiles_per_s'])} | - | - | {fmt(r['cpu_s'])} | "
                f"{fmt(r['tiles_per_cpu_s'])} | {r['cpu_busy_pct']} |"
            )
    ratios: dict[str, float] = {}
    if 1 in shown and 2 in shown:
        ratios["tiles_per_s_2_over_1"] = round(shown[2]["tiles_per_s"] / shown[1]["tiles_per_s"], 2)
        ratios["steady_2_over_1"] = round(
            shown[2]["steady_tiles_per_s"] / shown[1]["steady_tiles_per_s"], 2
        )
        print(
            f"\n2 workers ÷ 1: tiles/s {ratios['tiles_per_s_2_over_1']}, steady tiles/s "
            f"{ratios['steady_2_over_1']}"
        )
    if 2 in shown and 2 in local_shown:
        ratios["distributed_2_over_local_2"] = round(
            shown[2]["tiles_per_s"] / local_shown[2]["tiles_per_s"], 2
        )
        print(f"2 workers ÷ local --processes 2: tiles/s {ratios['distributed_2_over_local_2']}")
    result = {
        **run_header(started_utc, load_before),
        "revision": git_revision(),
        "backend": args.backend,
        "workload": {"layer": LAYER, "zooms": args.zoom, "bbox": land_bbox_3857()},
        "distributed": {str(k): v for k, v in distributed.items()},
        "local": {str(k): v for k, v in local.items()},
        "ratios": ratios,
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    log(f"wrote {run_dir / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
