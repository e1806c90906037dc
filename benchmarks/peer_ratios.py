"""Ratios tileserver ÷ each peer from one run of the peers' bench.sh.

  .venv/bin/python benchmarks/peer_ratios.py /tmp/peers-run/bench/<time> [--ours tileserver]

Reads the `<name>.result.json` files bench.sh writes and prints, for every other server,
hit req/s, hit p99 latency and median cold tiles/s of `--ours` divided by the peer's
(throughput > 1: ours is faster; latency > 1: ours is slower).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load(run_dir: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for path in sorted(run_dir.glob("*.result.json")):
        data = json.loads(path.read_text())
        if "failed" not in data:
            results[path.name.removesuffix(".result.json")] = data
    return results


def metrics(r: dict[str, Any]) -> dict[str, float | None]:
    hit, cold = r.get("hit") or {}, r.get("cold") or {}
    return {
        "hit_rps": hit.get("rps"),
        "hit_p99_ms": hit.get("p99_ms"),
        "cold_tiles_per_s": cold.get("tiles_per_s"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("run_dir", type=Path, help="a /tmp/peers-run/bench/<time> directory")
    ap.add_argument("--ours", default="tileserver")
    args = ap.parse_args(argv)
    results = load(args.run_dir)
    if args.ours not in results:
        print(f"no {args.ours}.result.json in {args.run_dir}", file=sys.stderr)
        return 1
    mine = metrics(results[args.ours])
    print(f"| {args.ours} ÷ peer | hit req/s | hit p99 latency | cold tiles/s (median) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        if name == args.ours:
            continue
        theirs = metrics(r)
        cells = []
        for key in ("hit_rps", "hit_p99_ms", "cold_tiles_per_s"):
            a, b = mine[key], theirs[key]
            cells.append(f"{a / b:.2f}" if a is not None and b else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
