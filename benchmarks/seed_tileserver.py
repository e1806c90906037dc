"""Seeder adapter for the peers' seed_bench.sh: `generate_tiles`, then the z/x/y layout.

tileserver writes TileCloud-chain's WMTS layout,
`1.0.0/{layer}/{style}/{matrix set}/{z}/{row}/{col}.png`. The peers' tools/seed_count.py
reads `.../{z}/{x}/{y}.ext` (or the `tc` layout), so it would take {row} for x. This
adapter runs `generate_tiles` into a folder store beside $SEED_OUT, then renames each
tile to `$SEED_OUT/{z}/{col}/{row}.png` (same filesystem: one rename per tile, no copy).
seed_bench.sh times the whole command; the adapter prints a `SEED_ADAPTER {json}` line with
the seconds spent in generate_tiles and in the renames, for bench_generate.py.

Run by bench_generate.py as
  seed_bench.sh --add tileserver='PYTHON benchmarks/seed_tileserver.py --config CFG --layer osm'
(and `--add tileserver-wms='... --layer osm_wms'` for the layer over the peers' WMS)
where CFG is a tileserver config whose store folder is the placeholder `@STORE@`, and with
seed_bench.sh's environment: SEED_OUT SEED_MINZOOM SEED_MAXZOOM SEED_BBOX_3857
SEED_CONCURRENCY (passed as --processes). The metatiles generated are added to the counter
file `render-count` beside $SEED_OUT (for seed_bench.sh --renders).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

STORE_PLACEHOLDER = "@STORE@"
SUMMARY = re.compile(r"generated: (\d+) metatiles, (\d+) tiles written")


def relayout(store: Path, out: Path, layer: str, matrix_set: str, style: str) -> int:
    """Rename each `{z}/{row}/{col}.ext` of the layer's WMTS folder to `out/{z}/{col}/{row}.ext`."""
    base = store / "1.0.0" / layer / style / matrix_set
    moved = 0
    for z_dir in sorted(base.iterdir()) if base.is_dir() else []:
        for row_dir in z_dir.iterdir():
            for tile in row_dir.iterdir():
                col, ext = tile.name.split(".", 1)
                target = out / z_dir.name / col / f"{row_dir.name}.{ext}"
                target.parent.mkdir(parents=True, exist_ok=True)
                tile.rename(target)
                moved += 1
    return moved


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--config", type=Path, required=True, help=f"with {STORE_PLACEHOLDER}")
    ap.add_argument("--layer", default="osm", help="the layer of CFG to generate")
    ap.add_argument("--matrix-set", default="epsg3857")
    ap.add_argument("--style", default="default")
    args = ap.parse_args(argv)

    out = Path(os.environ["SEED_OUT"])
    work = out.parent
    store = work / "tileserver-store"
    shutil.rmtree(store, ignore_errors=True)
    config = work / "tileserver.yaml"
    config.write_text(args.config.read_text().replace(STORE_PLACEHOLDER, str(store)))
    zooms = f"{os.environ['SEED_MINZOOM']}-{os.environ['SEED_MAXZOOM']}"
    command = [
        str(Path(sys.executable).parent / "generate_tiles"),
        "--config", str(config), "--layer", args.layer, "--zoom", zooms,
        "--bbox", os.environ["SEED_BBOX_3857"],
        "--processes", os.environ.get("SEED_CONCURRENCY", "2"),
        "--state-file", str(work / "generate.state"),
        "--error-file", str(work / "generate-errors.txt"), "--quiet",
    ]  # fmt: skip
    print(" ".join(command), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    t1 = time.perf_counter()
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    moved = relayout(store, out, args.layer, args.matrix_set, args.style)
    t2 = time.perf_counter()
    summary = SUMMARY.search(proc.stdout + proc.stderr)
    metatiles = int(summary.group(1)) if summary else 0
    counter = work / "render-count"
    total = int(counter.read_text() or 0) if counter.exists() else 0
    counter.write_text(f"{total + metatiles}\n")
    report = {
        "rc": proc.returncode,
        "generate_s": round(t1 - t0, 3),
        "relayout_s": round(t2 - t1, 3),
        "metatiles": metatiles,
        "tiles_written": int(summary.group(2)) if summary else None,
        "tiles_moved": moved,
    }
    print("SEED_ADAPTER " + json.dumps(report), flush=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
