"""Folder, MBTiles, GeoPackage and PMTiles stores side by side, in one run.

1. `generate_tiles` renders Monaco (the demo layer `osm`) at z12-18 into a folder store,
   once (Mapnik's time is the same whatever the store).
2. Generation into each store: the tiles of that run written again with `put_many`, one
   call per 8x8 block of tiles (what `generate_tiles` does per metatile), 2 concurrent
   calls (`--processes 1` + 1); PMTiles, read-only, is timed as the export of the folder
   (`generate_controller --export-pmtiles`'s service).
3. Serving hits: `get` of random stored tiles by 32 concurrent tasks for `--seconds`, in
   the order folder, X, X, folder for each X (A B B A), so that a drift of the machine
   shows; ratios against the folder of the same round.
4. Inodes and bytes of the z12-18 run: the folder's files and directories against one
   file (plus its -wal and -shm while open).

In-process: the HTTP face in front of every store is the same code (see
bench_store_serving.py for the folder and S3 over HTTP with wrk).

  .venv/bin/python benchmarks/bench_single_file_stores.py --seconds 5

Prints a Markdown table and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import demo_config  # noqa: E402
from tileserver.adapters.filesystem_store import FilesystemStore  # noqa: E402
from tileserver.adapters.geopackage_store import GeoPackageStore  # noqa: E402
from tileserver.adapters.mbtiles_store import MBTilesStore  # noqa: E402
from tileserver.adapters.pmtiles_store import PMTilesStore, PMTilesWriter, tile_order  # noqa: E402
from tileserver.config_loader import load_config  # noqa: E402
from tileserver.protocols import TileStore  # noqa: E402
from tileserver.services.pmtiles_export import export_layer  # noqa: E402
from tileserver.store_layout import parse_tile_path, tileset_of  # noqa: E402

ZOOMS = range(12, 19)


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def git_revision() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False)  # fmt: skip
    return out.stdout.strip() or "?"


def inodes(folder: Path) -> tuple[int, int]:
    """(files and directories, bytes of the files) under folder, itself included."""
    count, size = 1, 0
    for _, dirs, files in os.walk(folder):
        count += len(dirs) + len(files)
    for path in folder.rglob("*"):
        if path.is_file():
            size += path.stat().st_size
    return count, size


async def hits(store: TileStore, paths: list[str], seconds: float) -> float:
    """get() per second by 32 concurrent tasks."""
    done = 0
    stop = time.monotonic() + seconds

    async def task(seed: int) -> None:
        nonlocal done
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            data = await store.get(rnd.choice(paths))
            assert data is not None
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(task(i) for i in range(32)))
    return done / (time.monotonic() - started)


async def writes(store: TileStore, tiles: dict[str, bytes]) -> float:
    """put_many of 8x8 blocks, 2 at a time; tiles per second."""
    blocks: dict[tuple[str, int, int], dict[str, bytes]] = {}
    for path, data in tiles.items():
        parsed = parse_tile_path("", path)
        assert parsed is not None
        blocks.setdefault((parsed.matrix_id, parsed.row // 8, parsed.col // 8), {})[path] = data
    queue = list(blocks.values())
    started = time.monotonic()

    async def worker() -> None:
        while queue:
            await store.put_many(queue.pop(), "image/png")

    await asyncio.gather(worker(), worker())
    return len(tiles) / (time.monotonic() - started)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    data = demo_config(None)
    data["caches"] = {"folder": {"type": "filesystem", "folder": str(work / "folder")}}
    data["layers"]["osm"]["cache"] = "folder"
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    print(f"commit {git_revision()}, load average before: {loadavg()}", flush=True)
    started = time.monotonic()
    command = [sys.executable, "-m", "tileserver", "generate", "--config", str(config_path),
               "--layer", "osm", "--zoom", f"{ZOOMS[0]}-{ZOOMS[-1]}", "--quiet"]  # fmt: skip
    await asyncio.to_thread(subprocess.run, command, cwd=work, check=True)
    render_s = time.monotonic() - started
    config = load_config(config_path)
    layer = config.layers["osm"]
    folder = FilesystemStore(work / "folder")
    paths = [p async for p in folder.list_paths("1.0.0/osm/")]
    tiles = {p: await folder.get(p) or b"" for p in paths}
    print(f"{len(tiles)} tiles rendered in {render_s:.0f} s (generate_tiles into the folder)")

    grids, layers = config.grids, config.layers
    stores: dict[str, TileStore] = {
        "folder": FilesystemStore(work / "copy"),
        "MBTiles": MBTilesStore(work / "mb", grids=grids, layers=layers),
        "GeoPackage": GeoPackageStore(
            work / "t.gpkg", grids=grids, layers=layers, single_file=True
        ),
    }
    rates: dict[str, float] = {}
    for name, store in stores.items():
        await store.open()
        rates[name] = await writes(store, tiles)
    started = time.monotonic()
    await export_layer(layer, folder, ZOOMS, PMTilesWriter(work / "osm.pmtiles"), tile_order)
    rates["PMTiles (export)"] = len(tiles) / (time.monotonic() - started)
    tileset = tileset_of("osm", "default", (), "png", layer.grid)
    stores["PMTiles"] = PMTilesStore(str(work / "osm.pmtiles"), tileset)
    await stores["PMTiles"].open()

    print("\n| store | writes (tiles/s) | hits (get/s), A B B A | ÷ folder |")
    print("| --- | --- | --- | --- |")
    sample = random.Random(1).sample(paths, min(len(paths), 2000))
    for name in ("MBTiles", "GeoPackage", "PMTiles"):
        order: list[tuple[str, Callable[[], Awaitable[float]]]] = []
        for who in ("folder", name, name, "folder"):
            store = stores[who]
            order.append((who, lambda s=store: hits(s, sample, args.seconds)))  # type: ignore[misc]
        measured = [(who, await run()) for who, run in order]
        folder_rate = (measured[0][1] + measured[3][1]) / 2
        rate = (measured[1][1] + measured[2][1]) / 2
        write = rates.get(name) or rates["PMTiles (export)"]
        a1, a2 = measured[0][1], measured[3][1]
        print(f"| {name} | {write:,.0f} | {rate:,.0f} (folder {folder_rate:,.0f}: "
              f"{a1:,.0f}, {a2:,.0f}) | {rate / folder_rate:.2f} |")  # fmt: skip
    print(f"| folder | {rates['folder']:,.0f} | (the A of each row) | 1 |")
    for store in stores.values():
        await store.close()

    print("\n| z12-18 of Monaco | inodes | bytes |")
    print("| --- | --- | --- |")
    count, size = inodes(work / "copy")
    print(f"| folder | {count:,} | {size:,} |")
    mbtiles = next((work / "mb").rglob("*.mbtiles"))
    files = {"MBTiles": mbtiles, "GeoPackage": work / "t.gpkg", "PMTiles": work / "osm.pmtiles"}
    for name, file in files.items():
        print(f"| {name} | 1 | {file.stat().st_size:,} |")
    print(f"\nload average after: {loadavg()}; files in {work}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per hit measurement")
    asyncio.run(main(parser.parse_args()))
