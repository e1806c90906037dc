"""TileCloud-chain's commands as its users' scripts call them (issue 13): `generate_tiles`,
`generate_controller` and `generate_cost` with TileCloud-chain's options, spelled as
TileCloud-chain spells them (`-c` defaulting to tilegeneration/config.yaml, `-b MINX MINY
MAXX MAXY`, `-z`, `-l`, `-g`, `-t N`, `--near X Y`, `--dimensions`, `--no-geom`,
`--local-process-number`, `-d`/`-q`/`-v`, `--get-hash`, `--get-bbox`,
`--generate-wmts-capabilities`, `--generate-openlayers-testpage`...), writing
TileCloud-chain's layout (`2_5`-style resolution identifiers), with the real Mapnik
renderer over the demo data; and the configuration keys generation honours
(`dimensions[].generate`, `grids`, `px_buffer`, `error_file`, `maxconsecutive_errors`,
per-layer `cost`)."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from tests.support.daemons import free_port
from tests.support.server import STYLE, demo_config

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
MONACO_3857 = (824000, 5421800, 829500, 5428000)
MONACO_LV95 = (2596500, 840000, 2601500, 845500)
LV95 = {  # the demo's LV95 grid, with TileCloud-chain's resolution identifiers
    "srs": "EPSG:2056",
    "bbox": [2420000, 830000, 2900000, 1350000],
    "resolutions": [4000, 1000, 250, 100, 20, 10, 5, 2.5, 1, 0.5],
    "matrix_identifier": "resolution",
}
SUMMARY = re.compile(r"^generated: (\d+) metatiles, (\d+) tiles written, (\d+) empty dropped, "
                     r"(\d+) failed", re.MULTILINE)  # fmt: skip


def write(folder: Path, layers: dict[str, Any], name: str = "config.yaml", **top: Any) -> Path:
    """The demo grids and style, a `tiles` folder cache in folder, and these layers."""
    data = demo_config(None)
    data["grids"]["lv95"] = LV95
    data["layers"] = layers
    data["layer_default"]["mapfile"] = str(STYLE)
    data["caches"] = {"tiles": {"type": "filesystem", "folder": str(folder / "tiles"),
                                "http_url": "https://tiles.example.org/"}}  # fmt: skip
    data["generation"] = {"default_cache": "tiles"}
    data.update(top)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def command(
    name: str, *args: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """A console script (generate_tiles, generate_controller, generate_cost) in cwd."""
    return subprocess.run([str(BIN / name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def counts(result: subprocess.CompletedProcess[str]) -> tuple[int, int, int, int]:
    match = SUMMARY.search(result.stdout)
    assert match is not None, result.stdout + result.stderr
    metatiles, written, dropped, failed = map(int, match.groups())
    return metatiles, written, dropped, failed


def stored(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.png")}


def limits(grid: dict[str, Any], z: int, bbox: tuple[float, ...]) -> tuple[range, range]:
    """Rows and columns of level z that a bbox touches (grid math written out)."""
    span = grid["resolutions"][z] * 256
    left, top = grid["bbox"][0], grid["bbox"][3]
    cols = range(math.floor((bbox[0] - left) / span), math.ceil((bbox[2] - left) / span))
    rows = range(math.floor((top - bbox[3]) / span), math.ceil((top - bbox[1]) / span))
    return rows, cols


# --- generate_tiles ---------------------------------------------------------------------------


def test_bbox_in_four_arguments_writes_tilecloud_chains_layout(tmp_path: Path) -> None:
    """`generate_tiles -c FILE -l LAYER -z Z -b MINX MINY MAXX MAXY`, on a grid with
    resolution identifiers: the files are where TileCloud-chain puts them (2_5)."""
    config = write(tmp_path, {"swiss": {"grid": "lv95", "bbox": list(MONACO_LV95)}})
    bbox = (2597000, 841000, 2599000, 843000)
    result = command("generate_tiles", "-c", str(config), "-l", "swiss", "-z", "7",
                     "-b", *map(str, bbox), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows, cols = limits(LV95, 7, bbox)
    files = stored(tmp_path / "tiles")
    assert set(files) == {f"1.0.0/swiss/default/lv95/2_5/{r}/{c}.png" for r in rows for c in cols}
    for data in files.values():
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size) == ("PNG", (256, 256))
    # The comma form, as before, gives the same selection.
    dry = command("generate_tiles", "-c", str(config), "-l", "swiss", "-z", "7",
                  "-b", ",".join(map(str, bbox)), "--dry-run", cwd=tmp_path)  # fmt: skip
    assert f"total: 1 metatiles, {len(files)} tiles" in dry.stdout, dry.stdout + dry.stderr
    wrong = command("generate_tiles", "-c", str(config), "-b", "1", "2", "3", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "--bbox '1 2 3': expected 4 numbers, MINX MINY MAXX MAXY" in wrong.stderr


def test_config_defaults_to_tilegeneration_config_yaml_then_its_mako(tmp_path: Path) -> None:
    layers = {"osm": {"grid": "epsg3857", "bbox": list(MONACO_3857)}}
    missing = command("generate_tiles", "-l", "osm", "-z", "10", "--dry-run", cwd=tmp_path)
    assert missing.returncode == 2
    assert "pass -c FILE, or run where tilegeneration/config.yaml or " \
           "tilegeneration/config.yaml.mako is" in missing.stderr  # fmt: skip
    write(tmp_path, layers, "tilegeneration/config.yaml.mako")
    mako = command("generate_tiles", "-l", "osm", "-z", "10", "--dry-run", cwd=tmp_path)
    assert mako.returncode == 0 and "total: 1 metatiles, 1 tiles" in mako.stdout, mako.stderr
    write(tmp_path, {"other": layers["osm"]}, "tilegeneration/config.yaml")
    plain = command("generate_tiles", "-l", "other", "-z", "10", "--dry-run", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr  # config.yaml first
    controller = command("generate_controller", "--dump-config", cwd=tmp_path)
    assert controller.returncode == 0 and "other:" in controller.stdout


def test_test_near_and_tile_choose_a_few_metatiles(tmp_path: Path) -> None:
    config = write(tmp_path, {"osm": {"grid": "epsg3857", "bbox": list(MONACO_3857),
                                      "meta_size": 2}})  # fmt: skip
    # -t N: the first metatiles of the selection holding N tiles.
    tested = command("generate_tiles", "-c", str(config), "-l", "osm", "-z", "16", "-t", "5",
                     "--dry-run", cwd=tmp_path)  # fmt: skip
    assert tested.returncode == 0, tested.stderr
    found = re.search(r"^total: (\d+) metatiles, (\d+) tiles$", tested.stdout, re.MULTILINE)
    assert found is not None, tested.stdout
    # Enough metatiles for 5 tiles, and not one more (a 2x2 metatile holds 4 at most).
    assert 5 <= int(found.group(2)) < 5 + 4
    # --near X Y: the square of metatiles around the point that holds about N tiles.
    x, y = 826500, 5425300  # the port of Monaco
    near = command("generate_tiles", "-c", str(config), "-l", "osm", "-z", "16",
                   "--near", str(x), str(y), "-t", "16", cwd=tmp_path)  # fmt: skip
    assert near.returncode == 0, near.stderr
    assert counts(near)[:2] == (4, 16)
    span = 2 * 20037508.342789244 / 2**16
    col, row = (
        math.floor((x + 20037508.342789244) / span),
        math.floor((20037508.342789244 - y) / span),
    )
    files = stored(tmp_path / "tiles")
    assert f"1.0.0/osm/default/epsg3857/16/{row}/{col}.png" in files
    assert len(files) == 16
    alone = command("generate_tiles", "-c", str(config), "-l", "osm", "--near", "1", "2",
                    "-z", "16", cwd=tmp_path)  # fmt: skip
    assert (
        alone.returncode == 2 and "--near goes with --test N and one --zoom level" in alone.stderr
    )
    # --tile Z/X/Y: the metatile of that tile.
    one = command("generate_tiles", "-c", str(config), "-l", "osm", "--tile", f"16/{col}/{row}",
                  "--dry-run", cwd=tmp_path)  # fmt: skip
    assert "total: 1 metatiles, 4 tiles" in one.stdout, one.stdout + one.stderr


def test_every_grid_is_generated_or_the_one_of_grid(tmp_path: Path) -> None:
    """A layer on two grids: both tile sets, each in its own CRS (the bbox reprojected);
    -g the one."""
    config = write(tmp_path, {"both": {"grids": ["epsg3857", "lv95"], "bbox": list(MONACO_3857)}})
    both = command("generate_tiles", "-c", str(config), "-l", "both", "-z", "5", cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    files = stored(tmp_path / "tiles")
    assert {p.split("/")[3] for p in files} == {"epsg3857", "lv95"}
    assert {p.split("/")[4] for p in files if "/lv95/" in p} == {"10"}  # level 5: 10 m
    lv95_rows, lv95_cols = limits(LV95, 5, MONACO_LV95)
    assert {(int(p.split("/")[5]), int(p.split("/")[6][:-4])) for p in files if "/lv95/" in p} \
        <= {(r, c) for r in range(lv95_rows.start - 1, lv95_rows.stop + 1)
            for c in range(lv95_cols.start - 1, lv95_cols.stop + 1)}  # fmt: skip
    only = command("generate_tiles", "-c", str(config), "-l", "both", "-z", "8", "-g", "lv95",
                   "--dry-run", cwd=tmp_path)  # fmt: skip
    assert only.returncode == 0, only.stderr
    assert "layer both (grid lv95) -> cache tiles, grid lv95" in only.stdout
    assert "epsg3857" not in only.stdout
    # --update: the pre-generated levels regenerated, the on-demand ones expired, on each grid.
    update = command("generate_tiles", "-c", str(config), "-l", "both", "--update", "-z", "4-5",
                     "-b", *map(str, MONACO_3857), "--dry-run", cwd=tmp_path)  # fmt: skip
    assert update.returncode == 0, update.stderr
    assert (
        "invalidate layer both (grid epsg3857) in each server's in-process cache" in update.stdout
    )
    assert "invalidate layer both (grid lv95) in each server's in-process cache" in update.stdout
    wrong = command("generate_tiles", "-c", str(config), "-l", "both", "-g", "nope", "-z", "1",
                    cwd=tmp_path)  # fmt: skip
    assert wrong.returncode == 2
    assert "--grid: layer 'both' has no grid 'nope' (its grids: epsg3857, lv95)" in wrong.stderr


def test_dimensions_generate_values_and_the_dimensions_option(tmp_path: Path) -> None:
    dimension = {"name": "YEAR", "values": ["2024", "2025", "2026"], "default": "2025",
                 "generate": ["2024", "2025"]}  # fmt: skip
    config = write(tmp_path, {"osm": {"grid": "epsg3857", "bbox": list(MONACO_3857),
                                      "dimensions": [dimension]}})  # fmt: skip
    run = command("generate_tiles", "-c", str(config), "-l", "osm", "-z", "11", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    files = stored(tmp_path / "tiles")
    assert {p.split("/")[3] for p in files} == {"2024", "2025"}  # `generate`, not 2026
    one = command("generate_tiles", "-c", str(config), "-l", "osm", "-z", "12",
                  "--dimensions", "YEAR=2026", cwd=tmp_path)  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert {p.split("/")[3] for p in stored(tmp_path / "tiles") if "/12/" in p} == {"2026"}
    for value, message in (
        ("YEAR=1999", "--dimensions: YEAR=1999: not a value of layer 'osm'"),
        ("YEAR", "--dimensions 'YEAR': expected NAME=VALUE"),
        ("MONTH=5", "--dimensions: no layer has a dimension MONTH"),
    ):
        wrong = command("generate_tiles", "-c", str(config), "-l", "osm", "-z", "1",
                        "--dimensions", value, cwd=tmp_path)  # fmt: skip
        assert wrong.returncode == 2 and message in wrong.stderr, wrong.stderr


def test_no_geom_and_px_buffer(tmp_path: Path) -> None:
    """A layer's `geoms` limit the run, grown by px_buffer pixels; --no-geom ignores them."""
    point = tmp_path / "point.geojson"
    point.write_text(json.dumps({"type": "Point", "coordinates": [826500, 5425300]}))
    layers = {name: {"grid": "epsg3857", "bbox": list(MONACO_3857), "meta_size": 1,
                     "geoms": [{"file": str(point)}], **extra}
              for name, extra in (("plain", {}), ("buffered", {"px_buffer": 300}))}  # fmt: skip
    config = write(tmp_path, layers)

    def total(*args: str) -> int:
        result = command("generate_tiles", "-c", str(config), "-z", "16", "--dry-run", *args,
                         cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        found = re.search(r"^total: \d+ metatiles, (\d+) tiles$", result.stdout, re.MULTILINE)
        assert found is not None, result.stdout
        return int(found.group(1))

    assert total("-l", "plain") == 1  # the tile of the point
    assert total("-l", "buffered") == 9  # 300 px around it: the 3 x 3 tiles
    whole = total("-l", "plain", "--no-geom")
    rows, cols = limits({"bbox": [-20037508.342789244, 0, 0, 20037508.342789244],
                         "resolutions": [156543.03392804097 / 2**z for z in range(17)]},
                        16, MONACO_3857)  # fmt: skip
    assert whole == len(rows) * len(cols) > 9


def test_error_file_maxconsecutive_errors_and_debug(tmp_path: Path) -> None:
    """A WMS that cannot be reached: each failed metatile goes to generation.error_file,
    and the run stops after maxconsecutive_errors in a row (after one with -d)."""
    down = {"type": "wms", "url": f"http://127.0.0.1:{free_port()}/wms", "layers": "x",
            "grid": "epsg3857", "bbox": list(MONACO_3857), "meta_size": 1, "retries": 0,
            "timeout": 2}  # fmt: skip
    config = write(tmp_path, {"down": down},
                   generation={"default_cache": "tiles", "error_file": "failed.list",
                               "maxconsecutive_errors": 2})  # fmt: skip
    result = command("generate_tiles", "-c", str(config), "-l", "down", "-z", "15", "-q",
                     "--local-process-number", "1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "2 metatiles failed in a row (generation.maxconsecutive_errors: 2)" in result.stderr
    # Those in flight when it stops finish: 2 render processes, one more metatile at most.
    failed_count = counts(result)[3]
    assert failed_count in (2, 3)
    failed = (tmp_path / "failed.list").read_text().splitlines()
    assert len(failed) == failed_count and all(line.startswith("15/") for line in failed)
    assert "cannot connect" in failed[0]
    assert "resumes from" in result.stderr
    (tmp_path / "failed.list").unlink()
    debug = command("generate_tiles", "-c", str(config), "-l", "down", "-z", "15", "-d",
                    "--processes", "1", cwd=tmp_path)  # fmt: skip
    assert debug.returncode == 1
    assert counts(debug)[3] in (1, 2) and "DEBUG" in debug.stderr
    assert "metatiles failed in a row" in debug.stderr


def test_get_hash_and_get_bbox_with_tilecloud_chains_spelling(tmp_path: Path) -> None:
    config = write(tmp_path, {"osm": {"grid": "epsg3857", "bbox": list(MONACO_3857)}})
    got = command("generate_tiles", "-c", str(config), "-l", "osm", "--get-hash",
                  "15/17061/11948", cwd=tmp_path)  # fmt: skip
    assert got.returncode == 0, got.stderr
    block = yaml.safe_load(got.stdout)["empty_tile_detection"]
    assert set(block) == {"size", "hash", "color"}
    bbox = command("generate_tiles", "-c", str(config), "-l", "osm", "--get-bbox", "15/17061/11948",
                   cwd=tmp_path)  # fmt: skip
    assert bbox.returncode == 0 and "tile 15/17061/11948 (EPSG:3857):" in bbox.stdout


def test_options_without_meaning_here_are_accepted_and_said_so(tmp_path: Path) -> None:
    config = write(tmp_path, {"osm": {"grid": "epsg3857", "bbox": list(MONACO_3857)}})
    result = command("generate_tiles", "-c", str(config), "-l", "osm", "-z", "10", "--dry-run",
                     "--host", "host1", "--ignore-error", "--detach", "--time", "5",
                     "--job-id", "3", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--ignore-error", "--detach", "--time", "--job-id"):
        assert f"note: {option} is accepted for TileCloud-chain's sake and does nothing" \
               in result.stderr, option  # fmt: skip
    assert "total: 1 metatiles, 1 tiles" in result.stdout


# --- generate_controller and generate_cost ----------------------------------------------------


def test_controller_with_tilecloud_chains_options(tmp_path: Path) -> None:
    config = write(tmp_path, {"osm": {"grid": "epsg3857", "bbox": list(MONACO_3857),
                                      "min_resolution_seed": 300}})  # fmt: skip
    for option in ("--generate-wmts-capabilities", "--capabilities"):
        result = command("generate_controller", "-c", str(config), option, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "tiles" / "1.0.0" / "WMTSCapabilities.xml").is_file()
        (tmp_path / "tiles" / "1.0.0" / "WMTSCapabilities.xml").unlink()
    page = command("generate_controller", "-c", str(config), "--generate-openlayers-testpage",
                   "-q", cwd=tmp_path)  # fmt: skip
    assert page.returncode == 0, page.stderr
    assert (tmp_path / "tiles" / "index.html").is_file()
    noted = command("generate_controller", "-c", str(config), "--cost", "--legends", "--apache",
                    "-l", "osm", cwd=tmp_path)  # fmt: skip
    assert noted.returncode == 0, noted.stderr
    assert "note: --legends is accepted" in noted.stderr
    assert "note: --apache is accepted" in noted.stderr
    assert "layer osm (grid epsg3857, 8x8 metatiles)" in noted.stdout


def test_generate_cost_and_a_layers_own_cost(tmp_path: Path) -> None:
    """generate_cost (TileCloud-chain's script): the layer's own `cost` figures."""
    cost = {"metatile_generation_time": 1000, "tile_generation_time": 100}
    layers = {"plain": {"grid": "epsg3857", "bbox": list(MONACO_3857)},
              "slow": {"grid": "epsg3857", "bbox": list(MONACO_3857),
                       "cost": {"metatile_generation_time": 10000}}}  # fmt: skip
    config = write(tmp_path, layers, cost=cost)
    result = command("generate_cost", "-c", str(config), "-l", "plain", "-l", "slow", "-z",
                     "14", "--cost-algo", "count", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = re.findall(r"^  zoom 14: (\d+) metatiles, (\d+) tiles, (\d+):(\d\d):(\d\d)",
                       result.stdout, re.MULTILINE)  # fmt: skip
    assert len(lines) == 2
    (m1, t1, *plain), (m2, t2, *slow) = lines
    assert (m1, t1) == (m2, t2)

    def seconds(hms: list[str]) -> int:
        return int(hms[0]) * 3600 + int(hms[1]) * 60 + int(hms[2])

    assert seconds(plain) == round(int(m1) * 1 + int(t1) * 0.1)
    assert seconds(slow) == round(int(m2) * 10 + int(t2) * 0.1)
    assert "note: --cost-algo is accepted" in result.stderr
