"""generate_tiles' WMS answers cut in threads (`threaded_cut`): the same pixels as the render
processes cut from the same answer, a broken answer the same clear error, the render
processes kept for every layer the threads cannot cut, and a run over a bbox that starts
no process and loads no shapely."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.support.configs import mercator_grid
from tests.support.images import differing
from tests.support.mapserver import MapServerWMS
from tileserver import composition
from tileserver.adapters.renderers import LayerRenderer
from tileserver.adapters.threaded_cut import ThreadCutter, ThreadedWmsRenderer, cuts_in_threads
from tileserver.config import Config, Layer, parse_config
from tileserver.errors import RenderError, UpstreamError
from tileserver.grid import metatile_for
from tileserver.types import RenderedTiles, TileCoord

MONACO = TileCoord(16, 23896, 34120)  # sea and land in the WMS data
META = 4


def config(tmp_path: Path, url: str, **layers: dict[str, object]) -> Config:
    base = {"grid": "g", "meta_size": META, "meta_buffer": 16}
    data = {
        "grids": {"g": mercator_grid()},
        "layers": {name: base | layer for name, layer in layers.items()},
    }
    return parse_config(data, tmp_path)


def wms(url: str, **more: object) -> dict[str, object]:
    return {"type": "wms", "url": url, "layers": "osm", "retries": 0, "timeout": 60} | more


@pytest.mark.parametrize("output_format", ["png:z=1", "png", "png32", "jpeg90"])
async def test_threads_cut_the_pixels_the_render_processes_cut(
    mapserver: MapServerWMS, tmp_path: Path, output_format: str
) -> None:
    extension = "jpeg" if output_format.startswith("jpeg") else "png"
    settings = wms(mapserver.url, output_format=output_format, extension=extension)
    layer = config(tmp_path, mapserver.url, l=settings).layers["l"]
    metatile = metatile_for(layer.grid, MONACO, META, layer.meta_buffer)
    processes = LayerRenderer([layer], processes=1)
    threads = ThreadedWmsRenderer(2)
    await processes.start()
    await threads.start()
    try:
        expected = await processes.render(layer, metatile, {})
        found = await threads.render(layer, metatile, {})
        # A few metatiles at once, as generate_tiles has them, each its own tiles.
        others = [
            metatile_for(layer.grid, TileCoord(16, MONACO.row, MONACO.col + META * i), META, 16)
            for i in range(1, 4)
        ]
        together = await asyncio.gather(*(threads.render(layer, m, {}) for m in others))
        apart = [await processes.render(layer, m, {}) for m in others]
    finally:
        await threads.close()
        await processes.close()
    assert len(found) == META * META
    assert differing(found, expected) == []
    for tiles, alone in zip(together, apart, strict=True):
        assert differing(tiles, alone) == []
    colours = Image.open(io.BytesIO(found[MONACO])).convert("RGB").getcolors(65536)
    assert colours is not None and len(colours) > 10  # a map, not a blank tile
    # The colours of the uniform tiles, for empty tile detection by colour, as the
    # render processes see them.
    assert isinstance(found, RenderedTiles) and isinstance(expected, RenderedTiles)
    assert found.uniform == expected.uniform


async def test_an_answer_that_is_not_the_image_is_a_clear_upstream_error(
    mapserver: MapServerWMS, tmp_path: Path
) -> None:
    """MapServer asked for a metatile of another size than the one cut: the answer is a
    readable PNG, but not the metatile's image."""
    layer = config(tmp_path, mapserver.url, l=wms(mapserver.url)).layers["l"]
    metatile = metatile_for(layer.grid, MONACO, META, layer.meta_buffer)
    cutter = ThreadCutter(1)
    cutter.start()
    try:
        out = io.BytesIO()
        Image.new("RGB", (100, 80), (1, 2, 3)).save(out, "PNG")
        with pytest.raises(ValueError, match="100x80 pixels instead of"):
            await cutter.cut(layer, metatile, out.getvalue())
        with pytest.raises(ValueError, match="not a readable image"):
            await cutter.cut(layer, metatile, b"<html>gateway timeout</html>")
    finally:
        cutter.close()
    with pytest.raises(RenderError, match="not started"):
        await cutter.cut(layer, metatile, b"")
    # Through the renderer, half a PNG from the WMS is the WMS's fault: UpstreamError, 502.
    renderer = ThreadedWmsRenderer(1)
    await renderer.start()
    mapserver.set_mode("half_png")
    try:
        with pytest.raises(UpstreamError, match="not a readable image") as raised:
            await renderer.render(layer, metatile, {})
    finally:
        mapserver.set_mode("normal")
        await renderer.close()
    assert raised.value.status == 502


def test_only_wms_layers_that_need_no_mapnik_are_cut_in_threads(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/wms"
    style = tmp_path / "style.xml"
    style.write_text('<Map srs="epsg:3857"/>')
    found = config(
        tmp_path, url,
        plain=wms(url), jpeg=wms(url, extension="jpeg", output_format="jpeg80"),
        paletted=wms(url, output_format="png8:m=h"),
        mapnik={"type": "mapnik", "mapfile": str(style)},
    ).layers  # fmt: skip
    assert cuts_in_threads([found["plain"], found["jpeg"]])
    assert not cuts_in_threads([found["plain"], found["paletted"]])  # Mapnik's encoder
    assert not cuts_in_threads([found["plain"], found["mapnik"]])
    assert not cuts_in_threads([])


def test_pillow_and_isal_are_loaded_by_a_cutting_thread_once_started(tmp_path: Path) -> None:
    """Deciding to cut in threads and building the renderer load no image library (about
    12-25 ms of CPU before the first GetMap); the cutting threads load it when they start."""
    data = {
        "grids": {"g": mercator_grid()},
        "layers": {"l": {"grid": "g"} | wms("http://127.0.0.1:9/wms")},
    }
    (tmp_path / "config.yaml").write_text(json.dumps(data))  # YAML reads JSON
    code = (
        "import asyncio, sys, threading\n"
        "loaded_by = {}\n"
        "class Watch:\n"  # notes which thread imports the image libraries
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('PIL', 'isal'):\n"
        "            loaded_by[name] = threading.current_thread().name.split('_')[0]\n"
        "        return None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from tileserver import composition\n"
        "from tileserver.config_loader import load_config\n"
        "config = load_config('config.yaml')\n"
        "renderer = composition.generation_renderer(list(config.layers.values()), 2, config)\n"
        "print(type(renderer).__name__, sorted(loaded_by))\n"
        "async def run():\n"
        "    await renderer.start()\n"
        "    await renderer.close()\n"  # waits for the cutting threads
        "asyncio.run(run())\n"
        "print(sorted(loaded_by.items()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "ThreadedWmsRenderer []",
        "[('PIL', 'tileserver-cut'), ('isal', 'tileserver-cut')]",
    ], out.stdout


async def test_generation_over_such_layers_starts_no_process(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/wms"
    cfg = config(tmp_path, url, l=wms(url))
    layers: list[Layer] = list(cfg.layers.values())
    renderer = composition.generation_renderer(layers, 2, cfg)
    assert isinstance(renderer, ThreadedWmsRenderer)
    await renderer.start()
    try:
        assert await renderer.check() == (None, {})
    finally:
        await renderer.close()
    style = tmp_path / "style.xml"
    style.write_text('<Map srs="epsg:3857"/>')
    mixed = config(tmp_path, url, l=wms(url), m={"type": "mapnik", "mapfile": str(style)})
    assert isinstance(
        composition.generation_renderer(list(mixed.layers.values()), 2, mixed), LayerRenderer
    )


def test_a_wms_run_over_a_bbox_loads_no_render_process_nor_shapely(
    mapserver: MapServerWMS, tmp_path: Path
) -> None:
    """generate_tiles over the WMS, in a process of its own: the tiles are written, and
    it imported neither the render processes' machinery nor shapely (numpy, OpenBLAS)."""
    url = mapserver.url
    data = {
        "grids": {"g": mercator_grid()},
        "caches": {"local": {"type": "filesystem", "folder": str(tmp_path / "tiles")}},
        "layers": {"l": {"grid": "g", "meta_size": META, "meta_buffer": 16, "cache": "local",
                         "min_resolution_seed": 1.0} | wms(url)},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(json.dumps(data))  # YAML reads JSON
    x, y = 827200.0, 5425000.0  # Monaco's harbour, in EPSG:3857
    heavy = ("shapely", "numpy", "multiprocessing.synchronize", "mapnik",
             "tileserver.adapters.mapnik_renderer")  # fmt: skip
    code = (
        "import sys\n"
        "from tileserver.cli.generate import main\n"
        f"status = main(['--config', 'config.yaml', '--layer', 'l', '--zoom', '16', '--bbox', "
        f"'{x},{y},{x + 500},{y + 500}', '--processes', '2', '-q'])\n"
        f"print(status, [m for m in {heavy!r} if m in sys.modules])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == "0 []", run.stdout
    written = list((tmp_path / "tiles").rglob("*.png"))
    assert written
    for tile in written:
        image = Image.open(tile)
        image.load()
        assert image.size == (256, 256)


async def test_at_most_threads_getmaps_at_once_while_more_metatiles_are_in_flight(
    mapserver: MapServerWMS, tmp_path: Path
) -> None:
    """`--processes 2` over a WMS: 5 metatiles asked for at once, 2 GetMaps at once, as
    TileCloud-chain's 2 processes (or `mapcache_seed -n 2`) send; the others wait for a
    connection."""
    layer = config(tmp_path, mapserver.url, l=wms(mapserver.url)).layers["l"]
    metatiles = [
        metatile_for(layer.grid, TileCoord(16, MONACO.row, MONACO.col + META * i), META, 16)
        for i in range(5)
    ]
    renderer = ThreadedWmsRenderer(2)
    await renderer.start()
    mapserver.clear_log()
    mapserver.set_mode("slow:1")  # each GetMap lasts a second: their overlaps are plain
    try:
        rendered = await asyncio.gather(*(renderer.render(layer, m, {}) for m in metatiles))
    finally:
        mapserver.set_mode("normal")
        await renderer.close()
    assert [len(tiles) for tiles in rendered] == [META * META] * 5
    getmaps = [r for r in mapserver.requests() if r.kind == "wms"]
    assert len(getmaps) == 5
    spans = [(r.time - r.ms / 1000, r.time) for r in getmaps]
    # How many ran 50 ms after each one started (the log's times are to the millisecond).
    at_once = [sum(1 for s, e in spans if s <= start + 0.05 < e) for start, _ in spans]
    assert max(at_once) == 2, spans
