"""`generate_tiles --update` after a data update, with a real memcached, a real
`tileserver serve` and real Mapnik renders: the stored levels are regenerated inside the
area and nowhere else, the on-demand tiles cached there are deleted from Memcached and
render again, those outside stay cached."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from shapely import Polygon
from shapely import box as shapely_box

from tests.support.daemons import Memcached
from tests.support.processes import run_bounded
from tests.support.server import ROOT, TileServer, demo_config

pytestmark = pytest.mark.e2e

MERC = 20037508.342789244
SEED = 1.19  # z17 (1.194 m) is pre-generated, z18 (0.597 m) and finer render on demand
LAYER_BBOX = (825400, 5424000, 827800, 5426400)  # 2.4 km of Monaco: few metatiles
# A small triangle over La Condamine, and a point of another z18 metatile.
CHANGED = Polygon([(826400, 5425100), (826650, 5425150), (826500, 5425350)])
ELSEWHERE = (825500, 5426300)
PREFIX = "1.0.0/osm/default/epsg3857"
KEY_PREFIX = "test/osm/default/epsg3857"
# Drawn over everything once the map "changes": every pixel of a re-rendered tile differs.
OVERLAY = """
  <Style name="update"><Rule><PolygonSymbolizer fill="#ff0000" fill-opacity="0.3"/></Rule></Style>
  <Layer name="update" srs="epsg:3857">
    <StyleName>update</StyleName>
    <Datasource>
      <Parameter name="type">geojson</Parameter>
      <Parameter name="file">../data/update.geojson</Parameter>
    </Datasource>
  </Layer>
</Map>"""


# --- helpers -------------------------------------------------------------------------------


def span(z: int) -> float:
    return 2 * MERC / 2**z


def tile_of(x: float, y: float, z: int) -> tuple[int, int]:
    """(row, col) of the tile holding the point."""
    return int((MERC - y) // span(z)), int((x + MERC) // span(z))


def tile_box(z: int, row: int, col: int, size: int = 1) -> Polygon:
    """The box of size x size tiles from (row, col)."""
    minx, maxy = -MERC + col * span(z), MERC - row * span(z)
    return shapely_box(minx, maxy - size * span(z), minx + size * span(z), maxy)


def metatile_tiles(z: int, row: int, col: int) -> list[tuple[int, int]]:
    """The 64 tiles of the 8x8 metatile holding (row, col)."""
    top, left = row - row % 8, col - col % 8
    return [(r, c) for r in range(top, top + 8) for c in range(left, left + 8)]


def key(z: int, row: int, col: int) -> str:
    return f"{KEY_PREFIX}/{z}/{row}/{col}"


def rest(z: int, row: int, col: int) -> str:
    return f"/wmts/{PREFIX}/{z}/{row}/{col}.png"


def stored(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.png")}


def zrc(path: str) -> tuple[int, int, int]:
    z, row, col = path.removesuffix(".png").split("/")[-3:]
    return int(z), int(row), int(col)


def copy_map(workdir: Path) -> Path:
    """The demo style and its data in workdir (the style reads ../data/): a map to change."""
    shutil.copytree(ROOT / "config" / "data", workdir / "data")
    (workdir / "styles").mkdir()
    style = workdir / "styles" / "osm.xml"
    shutil.copy(ROOT / "config" / "styles" / "osm.xml", style)
    return style


def change_map(style: Path) -> None:
    """A data update: a new polygon over the whole layer, drawn on top."""
    minx, miny, maxx, maxy = LAYER_BBOX
    feature = {"type": "Feature", "properties": {},
               "geometry": shapely_box(minx - 5000, miny - 5000, maxx + 5000, maxy + 5000)
               .__geo_interface__}  # fmt: skip
    data = {"type": "FeatureCollection", "features": [feature]}
    (style.parent.parent / "data" / "update.geojson").write_text(json.dumps(data))
    text = style.read_text()
    assert text.rstrip().endswith("</Map>")
    style.write_text(text.rstrip().removesuffix("</Map>") + OVERLAY + "\n")


def update_config(workdir: Path, style: Path, memcached: str | None) -> dict[str, Any]:
    """The demo layer osm over LAYER_BBOX with a folder store: z0-17 pre-generated, z18+
    on demand."""
    data = demo_config(memcached, osm={"bbox": list(LAYER_BBOX), "cache": "tiles",
                                       "min_resolution_seed": SEED})  # fmt: skip
    data["layer_default"]["mapfile"] = str(style)
    data["layers"].pop("osm_lv95")
    data["caches"] = {"tiles": {"type": "filesystem", "folder": str(workdir / "tiles")}}
    return data


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def memcached_set(memcached: Memcached, name: str, value: bytes) -> None:
    with socket.create_connection(("127.0.0.1", memcached.port), timeout=5) as s:
        s.sendall(f"set {name} 0 0 {len(value)}\r\n".encode() + value + b"\r\n")
        assert s.recv(100) == b"STORED\r\n"


def write_area(workdir: Path) -> Path:
    path = workdir / "changed.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": CHANGED.__geo_interface__}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def generate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bounded(
        [sys.executable, "-m", "tileserver", "generate", "--config", str(config),
         "--layer", "osm", "--processes", "2", *args],
        cwd=config.parent, timeout=120,
    )  # fmt: skip


def invalidated(result: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """(cached tiles deleted, keys checked) of the summary line."""
    match = re.search(
        r"^invalidated (\d+) cached tiles at levels 18-20 \((\d+) keys checked, [\d.]+ s\)$",
        result.stdout,
        re.MULTILINE,
    )
    assert match is not None, result.stdout + result.stderr
    return int(match.group(1)), int(match.group(2))


def expected_invalidation(z: int) -> tuple[int, int]:
    """(metatiles, tiles) of level z whose metatile intersects CHANGED: brute force."""
    minx, miny, maxx, maxy = CHANGED.bounds
    top, left = tile_of(minx, maxy, z)
    bottom, right = tile_of(maxx, miny, z)
    metatiles = {
        (r - r % 8, c - c % 8)
        for r in range(top - 8, bottom + 9)
        for c in range(left - 8, right + 9)
    }
    hit = [m for m in metatiles if tile_box(z, *m, size=8).intersects(CHANGED)]
    return len(hit), 64 * len(hit)


# --- the update ----------------------------------------------------------------------------


def test_update_regenerates_stored_tiles_and_invalidates_cached_ones_inside_the_area_only(
    memcached: Memcached, tileserver: Callable[..., TileServer], tmp_path: Path
) -> None:
    style = copy_map(tmp_path)
    data = update_config(tmp_path, style, memcached.address)
    config = write_yaml(tmp_path / "tileserver.yaml", data)
    first = generate(config, "--zoom", "16-17")
    assert first.returncode == 0, first.stderr
    before = stored(tmp_path / "tiles")
    inside = {p for p in before if tile_box(*zrc(p)).intersects(CHANGED)}
    assert {zrc(p)[0] for p in inside} == {16, 17}
    assert len(before) - len(inside) > 20

    # z18 on demand, inside the area and in another metatile: rendered, then cached.
    server = tileserver(data)
    z18_inside = tile_of(*CHANGED.centroid.coords[0], 18)
    z18_outside = tile_of(*ELSEWHERE, 18)
    assert z18_outside not in metatile_tiles(18, *z18_inside)
    old: dict[tuple[int, int], bytes] = {}
    for row, col in (z18_inside, z18_outside):
        rendered = server.get(rest(18, row, col))
        assert (rendered.status, rendered.headers["x-tile-source"]) == (200, "render")
        again = server.get(rest(18, row, col))
        assert again.headers["x-tile-source"] == "memcached"
        assert again.body == rendered.body
        old[row, col] = rendered.body
    cached_outside = {t: memcached.get(key(18, *t)) for t in metatile_tiles(18, *z18_outside)}
    assert all(value is not None for value in cached_outside.values())
    assert server.stop() == 0

    change_map(style)
    area = write_area(tmp_path)
    update = generate(config, "--geom", str(area), "--update", "--zoom", "16-20")
    assert update.returncode == 0, update.stderr

    # Stored levels: the tiles that intersect the area were redrawn, no other one.
    after = stored(tmp_path / "tiles")
    assert set(after) == set(before)
    changed = {p for p in before if after[p] != before[p]}
    assert changed == inside
    assert f"{len(inside)} tiles written" in update.stdout

    # On-demand levels: every tile of the metatiles that intersect the area is gone.
    metatiles = sum(expected_invalidation(z)[0] for z in (18, 19, 20))
    assert invalidated(update) == (64, 64 * metatiles)  # only z18_inside's metatile was cached
    assert all(memcached.get(key(18, *t)) is None for t in metatile_tiles(18, *z18_inside))
    assert {t: memcached.get(key(18, *t)) for t in cached_outside} == cached_outside

    server = tileserver(data)  # a new process: the old one holds the old map
    fresh = server.get(rest(18, *z18_inside))
    assert (fresh.status, fresh.headers["x-tile-source"]) == (200, "render")
    assert fresh.body != old[z18_inside]
    kept = server.get(rest(18, *z18_outside))
    assert kept.headers["x-tile-source"] == "memcached"
    assert kept.body == old[z18_outside]
    assert server.renders() == 1


def test_dry_run_counts_both_parts_and_changes_nothing_then_the_bound_refuses(
    memcached: Memcached, tmp_path: Path
) -> None:
    style = copy_map(tmp_path)
    config = write_yaml(tmp_path / "tileserver.yaml",
                        update_config(tmp_path, style, memcached.address))  # fmt: skip
    area = write_area(tmp_path)
    row, col = tile_of(*CHANGED.centroid.coords[0], 19)
    memcached_set(memcached, key(19, row, col), b"old")

    dry = generate(config, "--geom", str(area), "--update", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # Every pre-generated level by default, every on-demand level of the grid.
    assert "layer osm -> cache tiles, grid epsg3857, zooms 0-17:" in dry.stdout
    assert f"invalidate layer osm in memcached {memcached.address}, zooms 18-20:" in dry.stdout
    total = 0
    for z in (18, 19, 20):
        metatiles, tiles = expected_invalidation(z)
        assert f"  zoom {z}: {metatiles} metatiles, {tiles} tiles\n" in dry.stdout
        total += tiles
    assert re.search(rf"^total to invalidate: \d+ metatiles, {total} tiles$", dry.stdout, re.M)
    assert memcached.get(key(19, row, col)) == b"old"
    assert not (tmp_path / "tiles").exists()

    # Above --max-invalidate: refused before anything changed, flush_all suggested.
    bound = ("--max-invalidate", str(total - 1))
    refused = generate(config, "--geom", str(area), "--update", "--zoom", "17-20", *bound)
    assert refused.returncode == 1
    assert f"--update would invalidate {total} cached tiles at levels 18-20" in refused.stderr
    assert f"echo flush_all | nc -q 2 {memcached.address.replace(':', ' ')}" in refused.stderr
    assert memcached.get(key(19, row, col)) == b"old"
    assert not (tmp_path / "tiles").exists()
    dry_bound = generate(config, "--geom", str(area), "--update", "--dry-run", *bound)
    assert dry_bound.returncode == 0
    assert "--update would refuse" in dry_bound.stdout

    # Within the bound, the same run deletes the key (z17 regenerated on the way).
    done = generate(config, "--geom", str(area), "--update", "--zoom", "17-20",
                    "--max-invalidate", str(total))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert invalidated(done) == (1, total)
    assert memcached.get(key(19, row, col)) is None


# --- what it refuses, and without memcached -------------------------------------------------


def test_update_without_an_area_is_refused_and_suggests_flush_all(
    tmp_path: Path, closed_port: int
) -> None:
    memcached = f"127.0.0.1:{closed_port}"
    config = write_yaml(tmp_path / "tileserver.yaml", update_config(tmp_path, copy_map(tmp_path),
                                                                    memcached))  # fmt: skip
    refused = generate(config, "--update")
    assert refused.returncode == 2
    assert "--update needs --geom, --bbox or --tiles" in refused.stderr
    assert f"echo flush_all | nc -q 2 {memcached.replace(':', ' ')}" in refused.stderr
    combined = generate(config, "--update", "--bbox", ",".join(map(str, LAYER_BBOX)),
                        "--delete-empty")  # fmt: skip
    assert combined.returncode == 2
    assert "--update cannot be combined with --delete-empty" in combined.stderr
    assert not (tmp_path / "tiles").exists()


def test_without_memcached_it_warns_and_still_regenerates(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "tileserver.yaml",
                        update_config(tmp_path, copy_map(tmp_path), None))  # fmt: skip
    tiles = tmp_path / "expired.txt"  # an osm2pgsql expire list: the area of one z17 tile
    row, col = tile_of(*CHANGED.centroid.coords[0], 17)
    tiles.write_text(f"17/{col}/{row}\n")
    result = generate(config, "--tiles", str(tiles), "--update", "--zoom", "17-19")
    assert result.returncode == 0, result.stderr
    assert "the config has no `memcached` (nor `redis_cache`) setting" in result.stderr
    assert "levels 18-19 live in each server's in-process cache" in result.stderr
    assert "invalidated" not in result.stdout
    # Only the listed tile: its neighbours merely touch it.
    assert set(stored(tmp_path / "tiles")) == {f"{PREFIX}/17/{row}/{col}.png"}


def test_unreachable_memcached_is_an_error_after_the_regeneration(
    tmp_path: Path, closed_port: int
) -> None:
    memcached = f"127.0.0.1:{closed_port}"
    config = write_yaml(tmp_path / "tileserver.yaml", update_config(tmp_path, copy_map(tmp_path),
                                                                    memcached))  # fmt: skip
    bbox = CHANGED.bounds
    result = generate(config, "--bbox", ",".join(map(str, bbox)), "--update", "--zoom", "17-18")
    assert result.returncode == 1
    assert re.search(r"generated: \d+ metatiles, \d+ tiles written", result.stdout)
    top, left = tile_of(bbox[0], bbox[3], 17)
    bottom, right = tile_of(bbox[2], bbox[1], 17)
    expected = {f"{PREFIX}/17/{r}/{c}.png" for r in range(top, bottom + 1)
                for c in range(left, right + 1)}  # fmt: skip
    assert len(expected) > 1
    assert set(stored(tmp_path / "tiles")) == expected
    assert f"memcached {memcached} not reachable" in result.stderr
    assert "levels 18 were NOT invalidated" in result.stderr
    assert "--zoom 18" in result.stderr
