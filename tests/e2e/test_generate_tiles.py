"""`generate_tiles` / `tileserver generate` with the real Mapnik renderer over the demo data:
the tiles written, empty tiles, --get-hash, --delete-empty, --geom, resuming after
SIGKILL and SIGINT, and the errors of a command without the settings it needs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from pyproj import Transformer
from shapely import Polygon
from shapely import box as shapely_box

from tests.support.images import differing, planted_png, same_tile
from tests.support.server import demo_config
from tests.support.waiting import wait_until
from tileserver.adapters.filesystem_store import FilesystemStore, is_temporary
from tileserver.uniform_tiles import format_colour, parse_colour, uniform_colour

pytestmark = pytest.mark.e2e

OSM_BBOX = (824000, 5421800, 829500, 5428000)  # layers.osm.bbox of the demo
SEA_TILE = "15/17061/11948"  # z/x/y of a tile of plain sea off Monaco
PREFIX = "1.0.0/osm/default/epsg3857"
SUMMARY = re.compile(
    r"^generated: (\d+) metatiles, (\d+) tiles written, (\d+) empty dropped, (\d+) failed, "
    r"(\d+) resumed, [\d.]+ s, [\d.]+ tiles/s$",
    re.MULTILINE,
)
TO_LONLAT = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
TO_MERCATOR = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


# --- helpers -------------------------------------------------------------------------------


def write_config(workdir: Path, layer: dict[str, Any] | None = None, **top: Any) -> Path:
    """The demo configuration with a `tiles` folder cache in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = demo_config(None, osm=layer or {})
    data["caches"] = {"tiles": {"type": "filesystem", "folder": str(workdir / "tiles")}}
    data.update(top)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tileserver", "generate", "--config", str(config), *args]


def run(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`tileserver generate` in the config's folder (where its state file goes)."""
    return subprocess.run(
        command(config, *args),
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = SUMMARY.search(result.stdout)
    assert match is not None, result.stdout + result.stderr
    keys = ("metatiles", "written", "dropped", "failed", "resumed")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def stored(folder: Path) -> dict[str, bytes]:
    """Every file under folder by its relative path, temporary files included."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def slippy(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(x, y) of the OSM tile holding lon/lat (the slippy-map formula)."""
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def tile_box_mercator(z: int, x: int, y: int) -> Polygon:
    n = 2**z

    def corner(cx: int, cy: int) -> tuple[float, float]:
        lon = cx / n * 360 - 180
        lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * cy / n))))
        return TO_MERCATOR.transform(lon, lat)

    minx, maxy = corner(x, y)
    maxx, miny = corner(x + 1, y + 1)
    return shapely_box(minx, miny, maxx, maxy)


def expected_paths(zooms: Iterable[int], bbox: tuple[float, float, float, float]) -> set[str]:
    """The tiles that intersect bbox (EPSG:3857), from lon/lat and the slippy formula."""
    west, south = TO_LONLAT.transform(bbox[0], bbox[1])
    east, north = TO_LONLAT.transform(bbox[2], bbox[3])
    paths = set()
    for z in zooms:
        x0, y0 = slippy(west, north, z)
        x1, y1 = slippy(east, south, z)
        paths |= {f"{PREFIX}/{z}/{y}/{x}.png" for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}
    return paths


def assert_tiles(files: dict[str, bytes]) -> None:
    for path, data in files.items():
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size) == ("PNG", (256, 256)), path


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def state_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".generate_tiles-*.state"))


# --- generation ----------------------------------------------------------------------------


def test_generates_the_layer_bbox_then_drops_the_empty_tiles_get_hash_finds(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    tiles = tmp_path / "tiles"

    first = run(config, "--layer", "osm", "--zoom", "13-15", "--cache", "tiles", "--processes", "2")
    assert first.returncode == 0, first.stderr
    files = stored(tiles)
    expected = expected_paths(range(13, 16), OSM_BBOX)
    assert set(files) == expected
    assert_tiles(files)
    counts = summary(first)
    assert counts == {"metatiles": 3, "written": len(expected), "dropped": 0, "failed": 0,
                      "resumed": 0}  # fmt: skip
    assert "state file " in first.stderr
    assert state_files(tmp_path) == []  # a finished run leaves no state file

    # --get-hash on a tile of plain sea: a block to paste into the layer.
    got = run(config, "--layer", "osm", "--get-hash", SEA_TILE)
    assert got.returncode == 0, got.stderr
    block = yaml.safe_load(got.stdout)
    sea = files[f"{PREFIX}/15/11948/17061.png"]
    colour = uniform_colour(sea)
    assert colour is not None and colour[3] == 255
    assert block["empty_tile_detection"] == {"size": len(sea), "hash": sha1(sea),
                                             "color": format_colour(colour)}  # fmt: skip
    assert block["empty_metatile_detection"] == {"size": len(sea), "hash": sha1(sea)}
    assert "compatibility only" in got.stdout
    sea_tiles = {p for p, data in files.items() if data == sea}
    assert len(sea_tiles) >= 2

    # Pasted into the config, the next generation drops the sea tiles, and deletes those
    # the first run stored.
    config = write_config(tmp_path, {"cache": "tiles", **block})
    second = run(config, "--layer", "osm", "--zoom", "13-15", "--processes", "2")
    assert second.returncode == 0, second.stderr
    files = stored(tiles)
    assert set(files) == expected - sea_tiles
    assert all(sha1(data) != sha1(sea) for data in files.values())
    assert summary(second)["dropped"] == len(sea_tiles)
    assert summary(second)["written"] == len(expected - sea_tiles)

    land = run(config, "--layer", "osm", "--get-hash", "15/17060/11948")
    assert land.returncode == 1
    assert re.search(
        r"tile 15/17060/11948 is not uniform \(\d+ colours\): pick a tile of plain sea or land",
        land.stderr,
    )


def test_a_hash_from_another_encoder_never_matches_and_the_colour_finds_the_empty_tiles(
    tmp_path: Path,
) -> None:
    """A TileCloud-chain user's hash: the sea tile as another encoder wrote it (zlib level
    6), on a layer tileserver encodes at level 1. generate_tiles says that it never matches
    (the sea tiles are stored); with the sea's colour, they are dropped."""
    other = run(write_config(tmp_path, {"output_format": "png"}), "--layer", "osm",
                "--get-hash", SEA_TILE)  # fmt: skip
    assert other.returncode == 0, other.stderr
    block = yaml.safe_load(other.stdout)["empty_tile_detection"]
    colour = block.pop("color")
    sea_path = f"{PREFIX}/15/11948/17061.png"

    config = write_config(tmp_path, {"cache": "tiles", "empty_tile_detection": block})
    stored_sea = run(config, "--layer", "osm", "--zoom", "15", "--processes", "1")
    assert stored_sea.returncode == 0, stored_sea.stderr
    assert "warning: layers.osm.empty_tile_detection: no tile of one colour" in stored_sea.stderr
    assert "never matches" in stored_sea.stderr
    assert summary(stored_sea)["dropped"] == 0
    files = stored(tmp_path / "tiles")
    assert sha1(files[sea_path]) != block["hash"]  # the same pixels, other bytes

    detection = {**block, "color": colour}
    config = write_config(tmp_path, {"cache": "tiles", "empty_tile_detection": detection})
    dropped = run(config, "--layer", "osm", "--zoom", "15", "--processes", "1")
    assert dropped.returncode == 0, dropped.stderr
    assert "never matches" not in dropped.stderr
    after = stored(tmp_path / "tiles")
    sea_tiles = {p for p, data in files.items() if uniform_colour(data) == parse_colour(colour)}
    assert sea_path in sea_tiles
    assert summary(dropped)["dropped"] == len(sea_tiles) > 1
    assert set(after) == set(files) - sea_tiles


def test_geom_limits_generation_to_the_tiles_that_intersect_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"cache": "tiles"})
    # A small triangle over the port of Monaco, in EPSG:3857.
    triangle = Polygon([(826300, 5425000), (826900, 5425100), (826500, 5425600)])
    geojson = tmp_path / "area.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": triangle.__geo_interface__}
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))

    result = run(config, "--layer", "osm", "--zoom", "15-16", "--geom", str(geojson),
                 "--processes", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = stored(tmp_path / "tiles")
    candidates = expected_paths(range(15, 17), OSM_BBOX)
    expected = set()
    for path in candidates:
        z, y, x = (int(part) for part in path.removesuffix(".png").split("/")[-3:])
        if tile_box_mercator(z, x, y).intersects(triangle):
            expected.add(path)
    assert set(files) == expected
    assert len(expected) < len(candidates) / 4
    assert_tiles(files)
    metatiles = {(p.split("/")[-3], int(p.split("/")[-2]) // 8, int(p.split("/")[-1][:-4]) // 8)
                 for p in expected}  # fmt: skip
    assert summary(result)["metatiles"] == len(metatiles)

    # The same area as WKT, from the console script, dry run: the same counts.
    wkt = tmp_path / "area.wkt"
    wkt.write_text(triangle.wkt)
    script = Path(sys.executable).with_name("generate_tiles")
    dry = subprocess.run(
        [str(script), "--config", str(config), "--layer", "osm", "--zoom", "15-16",
         "--geom", str(wkt), "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"total: {len(metatiles)} metatiles, {len(expected)} tiles" in dry.stdout


def test_tiles_regenerates_the_metatiles_holding_the_listed_tiles(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"cache": "tiles"})
    listed = tmp_path / "expired.txt"
    # Two tiles of one z15 metatile, one of a z16 metatile, as osm2pgsql writes them.
    listed.write_text("15/17061/11948\n15/17058/11946  # twice the same metatile\n16/34120/23896\n")
    result = run(config, "--layer", "osm", "--tiles", str(listed), "--processes", "1")
    assert result.returncode == 0, result.stderr
    expected = set()
    for z, x, y in ((15, 17061, 11948), (16, 34120, 23896)):
        x0, y0 = x // 8 * 8, y // 8 * 8
        block = {f"{PREFIX}/{z}/{row}/{col}.png" for row in range(y0, y0 + 8)
                 for col in range(x0, x0 + 8)}  # fmt: skip
        expected |= block & expected_paths([z], OSM_BBOX)  # within the layer's bbox
    assert set(stored(tmp_path / "tiles")) == expected
    assert summary(result)["metatiles"] == 2


def test_delete_empty_removes_the_stored_empty_tiles_only(tmp_path: Path) -> None:
    empty, other = planted_png((170, 210, 230)), planted_png((255, 0, 0))
    tiles = tmp_path / "tiles"
    planted = {
        f"{PREFIX}/14/5973/8529.png": empty,
        f"{PREFIX}/15/11948/17061.png": empty,
        f"{PREFIX}/15/11948/17060.png": other,
        f"{PREFIX}/16/23896/34122.png": empty,  # a level the command does not select
        "1.0.0/osm_lv95/default/epsg2056/15/1/1.png": empty,  # another layer
    }
    store = FilesystemStore(tiles)
    asyncio.run(store.put_many(planted, "image/png"))

    config = write_config(tmp_path, {"cache": "tiles"})
    refused = run(config, "--layer", "osm", "--zoom", "13-15", "--delete-empty")
    assert refused.returncode == 1
    assert "layers.osm.empty_tile_detection is not set" in refused.stderr

    detection = {"size": len(empty), "hash": sha1(empty)}
    config = write_config(tmp_path, {"cache": "tiles", "empty_tile_detection": detection})
    result = run(config, "--layer", "osm", "--zoom", "13-15", "--delete-empty")
    assert result.returncode == 0, result.stderr
    assert "deleted: 2 empty tiles of 3 checked" in result.stdout
    assert set(stored(tiles)) == set(planted) - {
        f"{PREFIX}/14/5973/8529.png",
        f"{PREFIX}/15/11948/17061.png",
    }

    # The same colour written by another encoder: found by its colour, not its bytes.
    other_bytes = io.BytesIO()
    Image.new("RGB", (256, 256), (170, 210, 230)).save(other_bytes, "PNG", compress_level=1)
    assert other_bytes.getvalue() != empty
    asyncio.run(store.put_many({f"{PREFIX}/15/11948/17062.png": other_bytes.getvalue()},
                               "image/png"))  # fmt: skip
    by_colour = {**detection, "color": "#aad2e6"}
    config = write_config(tmp_path, {"cache": "tiles", "empty_tile_detection": by_colour})
    result = run(config, "--layer", "osm", "--zoom", "15", "--delete-empty")
    assert result.returncode == 0, result.stderr
    assert "deleted: 1 empty tiles of 2 checked" in result.stdout
    assert f"{PREFIX}/15/11948/17062.png" not in stored(tiles)


# --- interrupted runs ----------------------------------------------------------------------

RESUME_ZOOMS = "13-16"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of an uninterrupted run (one tile per metatile: many small steps)."""
    workdir = tmp_path_factory.mktemp("reference")
    config = write_config(workdir, {"cache": "tiles", "meta_size": 1})
    result = run(config, "--layer", "osm", "--zoom", RESUME_ZOOMS, "--processes", "1")
    assert result.returncode == 0, result.stderr
    files = stored(workdir / "tiles")
    assert len(files) == summary(result)["metatiles"] > 100
    return files


def start(config: Path, started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command(config, "--layer", "osm", "--zoom", RESUME_ZOOMS, "--processes", "1"),
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started.append(process)
    return process


def wait_for_state_lines(folder: Path, count: int, process: subprocess.Popen[str]) -> Path:
    """The state file of the run in folder once it records `count` metatiles; fails if
    the run ends first (nothing left to interrupt)."""
    found: list[Path] = []

    def recorded() -> bool:
        found[:] = [s for s in state_files(folder) if s.read_text().count("\n") >= count]
        assert process.poll() is None or found, "the run ended before it could be interrupted"
        return bool(found)

    wait_until(
        recorded,
        f"{count} metatiles recorded in the state file",
        60,
        0.002,
        detail=lambda: {s.name: s.read_text().count("\n") for s in state_files(folder)},
    )
    return found[0]


def test_a_killed_run_resumes_and_ends_with_the_same_files(
    tmp_path: Path, reference: dict[str, bytes], started: list[subprocess.Popen[str]]
) -> None:
    config = write_config(tmp_path, {"cache": "tiles", "meta_size": 1})
    process = start(config, started)
    state = wait_for_state_lines(tmp_path, 10, process)
    os.killpg(process.pid, signal.SIGKILL)  # the generation and its render processes
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert state.exists()
    recorded = state.read_text().count("\n")
    partial = stored(tmp_path / "tiles")
    assert 10 <= len(partial) < len(reference)
    assert all(same_tile(d, reference[path]) for path, d in partial.items() if path in reference)
    # A write in progress when the run died leaves a temporary file: the next run removes it.
    leftover = tmp_path / "tiles" / PREFIX / "16" / ".1.png.0123456789ab.tmp"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"\x89PNG half")

    again = run(config, "--layer", "osm", "--zoom", RESUME_ZOOMS, "--processes", "1")
    assert again.returncode == 0, again.stderr
    assert "(resuming)" in again.stderr
    counts = summary(again)
    assert counts["resumed"] >= recorded
    assert counts["metatiles"] + counts["resumed"] == len(reference)
    files = stored(tmp_path / "tiles")
    assert not [path for path in files if is_temporary(path.rsplit("/", 1)[-1])]
    assert differing(files, reference) == []
    assert state_files(tmp_path) == []


def test_sigint_finishes_the_metatiles_in_flight_exits_130_and_resumes(
    tmp_path: Path, reference: dict[str, bytes], started: list[subprocess.Popen[str]]
) -> None:
    config = write_config(tmp_path, {"cache": "tiles", "meta_size": 1})
    process = start(config, started)
    state = wait_for_state_lines(tmp_path, 3, process)
    process.send_signal(signal.SIGINT)  # the generation only: it stops its render processes
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: run the same command again to resume" in stderr
    counts = summary(subprocess.CompletedProcess([], 130, stdout, stderr))
    assert 0 < counts["metatiles"] < len(reference)
    # Every metatile rendered was written and recorded.
    assert state.read_text().count("\n") == counts["metatiles"]
    assert len(stored(tmp_path / "tiles")) == counts["written"]

    again = run(config, "--layer", "osm", "--zoom", RESUME_ZOOMS, "--processes", "1")
    assert again.returncode == 0, again.stderr
    assert summary(again)["resumed"] == counts["metatiles"]
    assert differing(stored(tmp_path / "tiles"), reference) == []
    assert state_files(tmp_path) == []


# --- errors ---------------------------------------------------------------------------------


def test_a_failed_metatile_goes_to_the_error_file_and_replays_from_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"cache": "tiles"})
    # A file where the folder of level 14 should be: every write there fails.
    blocker = tmp_path / "tiles" / PREFIX / "14"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")

    failed = run(config, "--layer", "osm", "--zoom", "13-15", "--processes", "1")
    assert failed.returncode == 1
    counts = summary(failed)
    assert (counts["metatiles"], counts["failed"]) == (2, 1)
    assert "failed after 3 tries: StoreUnavailable" in failed.stderr
    errors = tmp_path / "generate_tiles-errors.txt"
    lines = errors.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("14/8528/5968  # osm: StoreUnavailable: ")  # z/x/y, top-left
    assert state_files(tmp_path) == []  # the run went through: failures are in the error file

    refused = run(config, "--layer", "osm", "--tiles", str(errors))
    assert refused.returncode == 2
    assert "is also the error file" in refused.stderr
    blocker.unlink()
    replay = tmp_path / "replay.txt"
    errors.rename(replay)
    replayed = run(config, "--layer", "osm", "--tiles", str(replay), "--processes", "1")
    assert replayed.returncode == 0, replayed.stderr
    assert summary(replayed)["metatiles"] == 1
    assert set(stored(tmp_path / "tiles")) == expected_paths(range(13, 16), OSM_BBOX)


def test_errors_name_the_missing_setting(tmp_path: Path) -> None:
    config = write_config(tmp_path)  # no generation section, no layer cache

    # Without --layer nor generation.default_layers, every layer is generated (as in
    # TileCloud-chain): here the only one, which then lacks a store.
    every_layer = run(config, "--zoom", "13")
    assert every_layer.returncode == 1
    assert "layer 'osm' has no tile store" in every_layer.stderr
    assert "generation.default_cache" in every_layer.stderr

    no_cache = run(config, "--layer", "osm", "--zoom", "13")
    assert no_cache.returncode == 1
    assert "generation.default_cache" in no_cache.stderr

    no_zoom = run(config, "--layer", "osm", "--cache", "tiles")
    assert no_zoom.returncode == 1
    assert "layers.osm.min_resolution_seed" in no_zoom.stderr

    config = write_config(
        tmp_path, generation={"default_layers": ["osm"], "default_cache": "tiles"}
    )
    bad_zoom = run(config, "--zoom", "99")
    assert bad_zoom.returncode == 2
    assert "--zoom '99': zoom 99 does not exist: the grid has levels 0 to 20" in bad_zoom.stderr

    outside = run(config, "--zoom", "13", "--bbox", "0,0,10,10")
    assert outside.returncode == 2
    assert "does not intersect layer 'osm'" in outside.stderr

    data = yaml.safe_load(config.read_text())
    data["generation"]["number_proces"] = 2
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    invalid = run(config, "--zoom", "13")
    assert invalid.returncode == 1
    assert f"invalid configuration {config}:" in invalid.stderr
    assert "generation.number_proces: unknown key; did you mean 'number_process'?" in (
        invalid.stderr
    )
    assert not (tmp_path / "tiles").exists()
