"""Generation benchmark: `generate_tiles` tiles/s by number of processes, and the peers' seeders.

  direct  `generate_tiles --layer osm --zoom 12-18 --bbox <Monaco's land bbox> --processes P`
          into an emptied folder store, for each P of --processes, interleaved, --repeats
          times: wall seconds of the whole command (process start, config, render pool,
          renders, writes), the seconds generate_tiles reports itself, tiles (files) and
          bytes written, which of the requested tiles are there, written and requested
          tiles/s (median run shown), CPU busy % of the machine (`--repeats 0`: none)
  peers   (--peers) the peers' seed_bench.sh over the same zooms and bbox, with two seeders
          added through benchmarks/seed_tileserver.py (generate_tiles, then the tiles
          renamed to the z/x/y layout seed_bench counts): `tileserver` (layer osm, Mapnik)
          and `tileserver-wms` (layer osm_wms, `type: wms` over the peers' MapServer WMS on
          :8081), for each concurrency of --peer-concurrency; tileserver ÷ peer ratios in
          requested tiles/s, the like-for-like ones being tileserver-wms ÷ mapcache-wms and
          tileserver ÷ mapproxy-mapnik

The workload is that of seed_bench.sh (tools/tiles.py LAND_BBOX, zooms 12-18: 928 tiles
in 28 distinct 8x8 metatiles). tileserver renders `config/demo.yaml.mako`'s layer `osm`
(Mapnik, its own style over GeoJSON), or `osm_wms` through the same WMS as MapCache, and
writes only the requested tiles; the peers render the same metatiles (MapServer WMS or
Mapnik over PostGIS) and write all 64 tiles of each.

  .venv/bin/python benchmarks/bench_generate.py
  /work/shared/peers/up.sh && .venv/bin/python benchmarks/bench_generate.py --peers
  .venv/bin/python benchmarks/bench_generate.py --repeats 0 --peers --peer-concurrency 2

A table goes to stdout; JSON and logs to benchmarks/out/generate-<time>/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from bench_ondemand import (
    LAND_BBOX,
    OUT_DIR,
    PEERS_WMS_URL,
    PNG_SIGNATURE,
    WMS_LAYER,
    add_wms_layer,
    apply_settings,
    covering,
    cpu_busy_pct,
    cpu_times,
    demo_config,
    fmt,
    git_revision,
    loadavg,
    log,
    run_header,
)

HERE = Path(__file__).resolve().parent
PEERS_DIR = Path(os.environ.get("PEERS_DIR", "/work/shared/peers"))
SEED_BENCH = PEERS_DIR / "seed_bench.sh"
ADAPTER = HERE / "seed_tileserver.py"
GENERATE_TILES = Path(sys.executable).parent / "generate_tiles"
LAYER = "osm"
# the seeders bench_generate adds to seed_bench.sh: name -> (layer, the "what" column)
ADDED_SEEDERS = {
    "tileserver": (
        LAYER,
        "tileserver generate_tiles; Mapnik, own style over GeoJSON; filesystem store "
        "(moved to z/x/y)",
    ),
    "tileserver-wms": (
        WMS_LAYER,
        "tileserver generate_tiles; MapServer WMS; filesystem store (moved to z/x/y)",
    ),
}
# tileserver's seeder -> the peers that render the same way
LIKE_FOR_LIKE = {"tileserver": ("mapproxy-mapnik",), "tileserver-wms": ("mapcache-wms",)}
SUMMARY = re.compile(
    r"generated: (\d+) metatiles, (\d+) tiles written, (\d+) empty dropped, (\d+) failed, "
    r"(\d+) resumed, ([\d.]+) s"
)
DRY_RUN_TOTAL = re.compile(r"total: (\d+) metatiles, (\d+) tiles")
TILE_PATH = re.compile(r"(\d+)/(\d+)/(\d+)\.png$")  # {z}/{row}/{col} under the matrix set


def land_bbox_3857() -> str:
    """Monaco's land bbox in EPSG:3857 metres, as the peers' `tiles.py bbox 3857` prints it."""
    r = 6378137.0

    def forward(lon: float, lat: float) -> tuple[float, float]:
        return math.radians(lon) * r, math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * r

    x0, y0 = forward(LAND_BBOX[0], LAND_BBOX[1])
    x1, y1 = forward(LAND_BBOX[2], LAND_BBOX[3])
    return ",".join(f"{v:.4f}" for v in (x0, y0, x1, y1))


def parse_zooms(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def generate_config(folder: str, max_zoom: int, wms_url: str | None = None) -> dict[str, Any]:
    """The demo config, its `osm` layer (and with `wms_url` a `type: wms` layer `osm_wms`
    over it) pre-generated down to max_zoom into `folder`."""
    data = demo_config()
    data["caches"] = {"bench": {"type": "filesystem", "folder": folder}}
    layers = [LAYER]
    if wms_url is not None:
        add_wms_layer(data, wms_url)
        layers.append(WMS_LAYER)
    data["generation"] = {"default_cache": "bench", "default_layers": layers}
    for layer in layers:
        grid = data["grids"][data["layers"][layer]["grid"]]
        data["layers"][layer]["min_resolution_seed"] = grid["resolutions"][max_zoom]
    return data


def compile_package() -> Path:
    """Byte-compiles the tileserver package this interpreter imports, as pip does when it
    installs it (and the Dockerfile's image has): where PYTHONDONTWRITEBYTECODE is set, as on
    this machine, an editable install has no bytecode and every generate_tiles run would
    compile the ~90 modules it imports again, about 60 ms of CPU before its first GetMap
    that an installed tileserver does not spend (benchmarks/RESULTS.md, issue 15, phase 7)."""
    import compileall

    import tileserver

    package = Path(tileserver.__file__).resolve().parent
    if not compileall.compile_dir(package, quiet=1):
        raise RuntimeError(f"byte-compiling {package} failed")
    return package


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


# --- direct generate_tiles runs ----------------------------------------------------------


def count_store(folder: Path) -> dict[str, Any]:
    """Files, bytes, PNGs and the (z, x, y) tiles of the layer's WMTS folder."""
    base = folder / "1.0.0" / LAYER / "default" / "epsg3857"
    files = nbytes = png = 0
    tiles: set[tuple[int, int, int]] = set()
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        files += 1
        nbytes += path.stat().st_size
        with path.open("rb") as f:
            png += f.read(8) == PNG_SIGNATURE
        if not path.is_relative_to(base):
            continue
        m = TILE_PATH.search(path.relative_to(base).as_posix())
        if m:
            z, row, col = (int(v) for v in m.groups())
            tiles.add((z, col, row))
    return {"files": files, "bytes": nbytes, "png": png, "tiles": tiles}


def run_generate(
    config: Path, folder: Path, zooms: str, bbox: str, processes: int, requested: set[Any] | None,
    n_requested: int, pause: float, log_path: Path,
) -> dict[str, Any]:  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    state = folder.parent / "generate.state"
    state.unlink(missing_ok=True)
    command = [str(GENERATE_TILES), "--config", str(config), "--layer", LAYER, "--zoom", zooms,
               "--bbox", bbox, "--processes", str(processes), "--state-file", str(state),
               "--error-file", str(folder.parent / "generate-errors.txt"), "--quiet"]  # fmt: skip
    os.sync()
    time.sleep(pause)
    load1 = float(loadavg().split()[0])
    c0 = cpu_times()
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    c1 = cpu_times()
    with log_path.open("a") as f:
        f.write(f"$ {shlex.join(command)}\n{proc.stdout}{proc.stderr}rc={proc.returncode}\n\n")
    summary = SUMMARY.search(proc.stdout + proc.stderr)
    count = count_store(folder)
    tiles = count.pop("tiles")
    present = len(tiles & requested) if requested is not None else len(tiles)
    complete = proc.returncode == 0 and present == n_requested
    return {
        "command": shlex.join(command),
        "processes": processes,
        "rc": proc.returncode,
        "wall_s": round(wall, 3),
        "reported_s": float(summary.group(6)) if summary else None,
        "metatiles": int(summary.group(1)) if summary else None,
        "failed": int(summary.group(4)) if summary else None,
        **count,
        "requested": n_requested,
        "requested_present": present,
        "extra": len(tiles - requested) if requested is not None else None,
        "written_tiles_per_s": round(count["files"] / wall, 1),
        "requested_tiles_per_s": round(n_requested / wall, 1) if complete else None,
        "reported_tiles_per_s": (
            round(count["files"] / float(summary.group(6)), 1)
            if summary and float(summary.group(6))
            else None
        ),
        "cpu_pct": cpu_busy_pct(c0, c1),
        "load1_before": load1,
    }


def dry_run(config: Path, zooms: str, bbox: str) -> tuple[int, int]:
    command = [str(GENERATE_TILES), "--config", str(config), "--layer", LAYER, "--zoom", zooms,
               "--bbox", bbox, "--dry-run"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    m = DRY_RUN_TOTAL.search(proc.stdout + proc.stderr)
    if m is None:
        raise RuntimeError(f"no total in the dry run:\n{proc.stdout}{proc.stderr}")
    return int(m.group(1)), int(m.group(2))


# --- the peers' seed_bench.sh --------------------------------------------------------------


def seed_bench_command(config: Path, only: str) -> list[str]:
    """seed_bench.sh --only ONLY, with an --add (and its render counter) for each of
    ADDED_SEEDERS that ONLY names."""
    command = [str(SEED_BENCH), "--only", only]
    for name, (layer, what) in ADDED_SEEDERS.items():
        if name not in only.split(","):
            continue
        adapter = (
            f"{shlex.quote(sys.executable)} {shlex.quote(str(ADAPTER))} "
            f"--config {shlex.quote(str(config))} --layer {layer}"
        )
        # the metatiles generate_tiles reports, summed by the adapter beside $SEED_OUT
        counter = f'cat "$RUN_DIR/seed-bench/work/add-{name}/render-count" 2>/dev/null || echo 0'
        command += ["--add", f"{name}={adapter}", "--renders", f"{name}={counter}",
                    "--desc", f"{name}={what}"]  # fmt: skip
    return command


def _seed_bench_once(
    config: Path, z0: int, z1: int, concurrency: int, repeats: int, only: str, run_dir: Path
) -> dict[str, Any]:
    """One seed_bench.sh run: its command, results folder, and per seeder its runs."""
    command = seed_bench_command(config, only)
    env = {**os.environ, "SEED_MINZOOM": str(z0), "SEED_MAXZOOM": str(z1),
           "SEED_CONCURRENCY": str(concurrency), "SEED_REPEATS": str(repeats)}  # fmt: skip
    log(f"seed_bench.sh, concurrency {concurrency} (load {loadavg()}): {shlex.join(command)}")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    m = re.search(r"results in (\S+)", proc.stderr)
    name = Path(m.group(1)).name if m else time.strftime("%H%M%S")
    (run_dir / f"seed_bench-c{concurrency}-{name}.out").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"seed_bench.sh failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = Path(m.group(1))
    seeders: dict[str, Any] = {}
    for seeder in only.split(","):
        path = out / f"{seeder}.result.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        adapter_runs = []
        for rep in range(1, len(data["runs"]) + 1):
            run_log = out / f"{seeder}.{rep}.log"
            for line in run_log.read_text().splitlines() if run_log.exists() else []:
                if line.startswith("SEED_ADAPTER "):
                    adapter_runs.append(json.loads(line.removeprefix("SEED_ADAPTER ")))
        seeders[seeder] = {"data": data, "runs": data["runs"], "adapter": adapter_runs}
    return {
        "command": shlex.join(command),
        "results_dir": str(out),
        "requested": len((out / "requested.tiles").read_text().splitlines()),
        "seeders": seeders,
        "summary_md": (out / "summary.md").read_text() if (out / "summary.md").exists() else "",
    }


def run_seed_bench(
    config: Path,
    z0: int,
    z1: int,
    concurrency: int,
    repeats: int,
    only: str,
    run_dir: Path,
    abba: bool = False,
) -> dict[str, Any]:
    """seed_bench.sh over `only`, `repeats` runs each; with `abba`, `repeats` runs of one
    seed_bench.sh each, the seeders in the order of `only`, then reversed, and so on
    (A B B A), so that a drift of the machine's load hits every seeder alike."""
    names = only.split(",")
    if abba:
        orders = [names if i % 2 == 0 else names[::-1] for i in range(repeats)]
        parts = [
            _seed_bench_once(config, z0, z1, concurrency, 1, ",".join(o), run_dir) for o in orders
        ]
    else:
        parts = [_seed_bench_once(config, z0, z1, concurrency, repeats, only, run_dir)]
    nreq = parts[0]["requested"]
    seeders: dict[str, Any] = {}
    for seeder in names:
        found = [p["seeders"][seeder] for p in parts if seeder in p["seeders"]]
        if not found:
            continue
        runs = [r for f in found for r in f["runs"]]
        wall = max(statistics.median(r["wall_s"] for r in runs), 1e-3)
        complete = all(r["rc"] == 0 and r["requested_present"] == nreq for r in runs)
        seeders[seeder] = {
            "what": found[0]["data"]["what"],
            "wall_s_median": wall,
            "wall_s_runs": [r["wall_s"] for r in runs],
            "load1_before_runs": [r.get("load1_before") for r in runs],
            "files": sorted({r["files"] for r in runs}),
            "mb": sorted({round(r["bytes"] / 1e6, 1) for r in runs}),
            "written_tiles_per_s": round(statistics.median(r["files"] for r in runs) / wall, 1),
            "requested_present": sorted({r["requested_present"] for r in runs}),
            "requested_tiles_per_s": round(nreq / wall, 1) if complete else None,
            "renders": [r["renders"] for r in runs],
            "render_counter": found[0]["data"]["render_counter"],
            "cpu_pct": [r["cpu_pct"] for r in runs],
            "rc": [r["rc"] for r in runs],
            "adapter": [a for f in found for a in f["adapter"]],
        }
    order = " / ".join(",".join(o) for o in ([names, names[::-1]] if abba else [names]))
    return {
        "concurrency": concurrency,
        "command": " ; ".join(p["command"] for p in parts),
        "env": f"SEED_MINZOOM={z0} SEED_MAXZOOM={z1} SEED_CONCURRENCY={concurrency} "
        f"SEED_REPEATS={1 if abba else repeats}" + (f" x{repeats}, order {order}" if abba else ""),
        "results_dir": " ".join(p["results_dir"] for p in parts),
        "requested": nreq,
        "seeders": seeders,
        "summary_md": "\n".join(p["summary_md"] for p in parts),
    }


# --- report ----------------------------------------------------------------------------


def direct_table(by_processes: dict[int, list[dict[str, Any]]]) -> str:
    lines = [
        "| processes | wall s (median; runs) | generate_tiles' own s | metatiles | tiles written "
        "| MB | requested present | written tiles/s | requested tiles/s | CPU% | exit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for processes, runs in by_processes.items():
        med = median_run(runs, "wall_s")
        lines.append(
            f"| {processes} | {med['wall_s']:.2f}; "
            + "/".join(f"{r['wall_s']:.2f}" for r in runs)
            + f" | {fmt(med['reported_s'])} | {fmt(med['metatiles'])} "
            f"| {'/'.join(sorted({str(r['files']) for r in runs}))} "
            f"| {med['bytes'] / 1e6:.1f} "
            f"| {min(r['requested_present'] for r in runs)}/{med['requested']} "
            f"| {med['written_tiles_per_s']:.0f} | {fmt(med['requested_tiles_per_s'], 0)} "
            f"| {'/'.join(str(r['cpu_pct']) for r in runs)} "
            f"| {'/'.join(str(r['rc']) for r in runs)} |"
        )
    return "\n".join(lines)


def peers_table(bench: dict[str, Any]) -> str:
    lines = [
        "| seeder | what | wall s (median; runs (1-min load before each)) | tiles written | MB "
        "| written tiles/s "
        "| requested present | requested tiles/s | renders per run | CPU% | exit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in bench["seeders"].items():
        lines.append(
            f"| {name} | {r['what']} | {r['wall_s_median']:.2f}; "
            + "/".join(f"{w:.2f}" for w in r["wall_s_runs"])
            + " (load "
            + "/".join(fmt(x) for x in r.get("load1_before_runs", []))
            + f") | {'/'.join(map(str, r['files']))} | {'/'.join(map(str, r['mb']))} "
            f"| {r['written_tiles_per_s']:.0f} "
            f"| {'/'.join(map(str, r['requested_present']))}/{bench['requested']} "
            f"| {fmt(r['requested_tiles_per_s'], 0)} "
            f"| {'/'.join(map(str, r['renders']))} ({r['render_counter']}) "
            f"| {'/'.join(map(str, r['cpu_pct']))} | {'/'.join(map(str, r['rc']))} |"
        )
    return "\n".join(lines)


def peer_ratios(bench: dict[str, Any], ours: str = "tileserver") -> dict[str, dict[str, Any]]:
    """tileserver ÷ peer in requested and written tiles/s: > 1 = tileserver faster."""

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    mine = bench["seeders"].get(ours)
    if mine is None:
        return {}
    return {
        name: {
            "requested_tiles_per_s": div(mine["requested_tiles_per_s"], r["requested_tiles_per_s"]),
            "written_tiles_per_s": div(mine["written_tiles_per_s"], r["written_tiles_per_s"]),
            "wall_s": div(mine["wall_s_median"], r["wall_s_median"]),
        }
        for name, r in bench["seeders"].items()
        if name != ours and name not in ADDED_SEEDERS
    }


def like_for_like(bench: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """tileserver-wms ÷ mapcache-wms and tileserver ÷ mapproxy-mapnik, where both ran."""
    out = {}
    for mine, theirs in LIKE_FOR_LIKE.items():
        table = peer_ratios(bench, mine)
        for peer in theirs:
            if peer in table:
                out[f"{mine} ÷ {peer}"] = table[peer]
    return out


# --- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--zoom", default="12-18", help="generate_tiles --zoom (default 12-18)")
    ap.add_argument(
        "--bbox",
        default="land",
        help="'land' (Monaco's land bbox, as the peers' seed bench; default), 'layer' (the "
        "layer's bbox) or MINX,MINY,MAXX,MAXY in EPSG:3857",
    )
    ap.add_argument("--processes", default="1,2", help="generate_tiles --processes, comma list")
    ap.add_argument(
        "--repeats", type=int, default=3, help="direct runs per count (median; 0: none)"
    )
    ap.add_argument("--pause", type=float, default=2.0, help="seconds (after sync) before a run")
    ap.add_argument("--peers", action="store_true", help="also run the peers' seed_bench.sh")
    ap.add_argument(
        "--peer-only",
        default="mapcache-wms,mapproxy-mapnik,tileserver,tileserver-wms",
        help="seed_bench.sh --only (default %(default)s); tileserver and tileserver-wms are "
        "added with --add",
    )
    ap.add_argument(
        "--wms-url", default=PEERS_WMS_URL, help="the WMS of tileserver-wms (default %(default)s)"
    )
    ap.add_argument("--peer-concurrency", default="1,2", help="SEED_CONCURRENCY values, comma list")
    ap.add_argument("--peer-repeats", type=int, default=2, help="SEED_REPEATS (default 2)")
    ap.add_argument(
        "--peer-abba",
        action="store_true",
        help="run seed_bench.sh --peer-repeats times with SEED_REPEATS=1, the seeders in the "
        "--peer-only order, then reversed (A B B A), instead of once with every seeder's runs "
        "back to back",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tileserver configuration setting, e.g. layers.osm.meta_size=4 (repeatable)",
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="default benchmarks/out")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    z0, z1 = parse_zooms(args.zoom)
    zooms = f"{z0}-{z1}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = args.out / f"generate-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    folder = work / "tiles"
    config = run_dir / "tileserver.yaml"
    # with --peers, the same layers as the seed config, so that every --set applies to both
    wms_url = args.wms_url if args.peers else None
    direct_data = apply_settings(generate_config(str(folder), z1, wms_url), args.set)
    config.write_text(yaml.safe_dump(direct_data, sort_keys=False))
    layer_bbox = demo_config()["layers"][LAYER]["bbox"]
    bbox = {"land": land_bbox_3857(), "layer": ",".join(map(str, layer_bbox))}.get(
        args.bbox, args.bbox
    )
    requested = (
        {t for z in range(z0, z1 + 1) for t in covering(z, LAND_BBOX)}
        if args.bbox == "land"
        else None
    )
    log(f"byte-compiled {compile_package()} (as an installed package is)")
    n_metatiles, n_tiles = dry_run(config, zooms, bbox)
    if requested is not None and n_tiles != len(requested):
        log(f"warning: generate_tiles plans {n_tiles} tiles, the peers' list has {len(requested)}")
    log(f"zooms {zooms}, bbox {bbox}: {n_tiles} tiles in {n_metatiles} metatiles; out {run_dir}")

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = loadavg()
    processes = [int(p) for p in args.processes.split(",")]
    by_processes: dict[int, list[dict[str, Any]]] = {p: [] for p in processes}
    try:
        for rep in range(args.repeats):
            for p in processes:  # interleaved, so that drift hits every count alike
                log(f"generate_tiles --processes {p}, run {rep + 1}/{args.repeats}")
                run = run_generate(config, folder, zooms, bbox, p, requested, n_tiles,
                                   args.pause, run_dir / "generate_tiles.log")  # fmt: skip
                log(f"  {run['wall_s']} s, {run['files']} files, rc {run['rc']}")
                by_processes[p].append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    seed_benches = []
    if args.peers:
        if args.bbox != "land":
            raise SystemExit("--peers needs --bbox land: seed_bench.sh seeds the land bbox")
        seed_config = run_dir / "seed-tileserver.yaml"
        seed_data = apply_settings(generate_config("@STORE@", z1, args.wms_url), args.set)
        seed_config.write_text(yaml.safe_dump(seed_data, sort_keys=False))
        for conc in (int(c) for c in args.peer_concurrency.split(",")):
            bench = run_seed_bench(seed_config, z0, z1, conc, args.peer_repeats,
                                   args.peer_only, run_dir, args.peer_abba)  # fmt: skip
            bench["min_renders"] = n_metatiles
            bench["ratios_tileserver_over_peer"] = peer_ratios(bench)
            bench["ratios_tileserver_wms_over_peer"] = peer_ratios(bench, "tileserver-wms")
            bench["ratios_like_for_like"] = like_for_like(bench)
            seed_benches.append(bench)

    report: dict[str, Any] = {
        **run_header(started, load_before),
        "tileserver": {"revision": git_revision(), "config": str(config), "set": list(args.set)},
        "workload": {
            "layer": LAYER,
            "seed_bench_layers": {name: layer for name, (layer, _) in ADDED_SEEDERS.items()},
            "zooms": zooms,
            "bbox_3857": bbox,
            "requested_tiles": n_tiles,
            "metatiles": n_metatiles,
        },
        "direct": {str(p): runs for p, runs in by_processes.items()},
        "seed_bench": seed_benches,
    }
    (run_dir / "result.json").write_text(json.dumps(report, indent=1) + "\n")

    print(f"\n{report['command']}")
    print(f"{started} .. {report['finished_utc']}; load {load_before} -> {loadavg()}; "
          f"revision {report['tileserver']['revision']}")  # fmt: skip
    print(f"layer {LAYER}, zooms {zooms}, bbox {bbox} (EPSG:3857): {n_tiles} requested tiles "
          f"in {n_metatiles} metatiles\n")  # fmt: skip
    if args.repeats:
        print("generate_tiles, folder store:\n")
        print(direct_table(by_processes))
    for bench in seed_benches:
        print(f"\nseed_bench.sh, {bench['env']} ({bench['results_dir']}):\n")
        print(peers_table(bench))
        for mine in ADDED_SEEDERS:
            for name, r in peer_ratios(bench, mine).items():
                same = " (like for like)" if name in LIKE_FOR_LIKE[mine] else ""
                print(
                    f"{mine} ÷ {name}{same} (concurrency {bench['concurrency']}): requested "
                    f"tiles/s {fmt(r['requested_tiles_per_s'], 2)}, written tiles/s "
                    f"{fmt(r['written_tiles_per_s'], 2)}, wall s {fmt(r['wall_s'], 2)}"
                )
            adapter = bench["seeders"].get(mine, {}).get("adapter", [])
            if adapter:
                print(
                    f"{mine} adapter: generate_tiles "
                    + "/".join(f"{a['generate_s']:.2f}" for a in adapter)
                    + " s, renames to z/x/y "
                    + "/".join(f"{a['relayout_s']:.3f}" for a in adapter)
                    + " s, metatiles "
                    + "/".join(str(a["metatiles"]) for a in adapter)
                )
    if seed_benches:
        print(
            "\n(tileserver renders with its own style over GeoJSON, tileserver-wms and "
            "mapcache-wms through the MapServer WMS, mapproxy-mapnik with Mapnik over PostGIS. "
            "tileserver writes only the requested tiles, the peers all 64 of each metatile: "
            "compare requested tiles/s.)"
        )
    print(f"\nJSON and logs: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
