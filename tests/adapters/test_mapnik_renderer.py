"""The Mapnik adapter: real render processes, metatiles cut in the workers, variables."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from tests.support.configs import single_layer
from tileserver.adapters.mapnik_renderer import MapnikRenderer
from tileserver.config import Layer
from tileserver.errors import ConfigError, RenderError
from tileserver.grid import metatile_for
from tileserver.types import RenderedTiles, TileCoord

ROOT = Path(__file__).resolve().parents[2]
SEA = ROOT / "config" / "data" / "sea.geojson"

# Draws Monaco's sea only when the dimension SHOW is 'yes' (a Mapnik @variable).
STYLE = f"""<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="sea"><Rule><Filter>@SHOW = 'yes'</Filter>
    <PolygonSymbolizer fill="#0000ff"/></Rule></Style>
  <Layer name="sea" srs="epsg:3857"><StyleName>sea</StyleName>
    <Datasource><Parameter name="type">geojson</Parameter>
      <Parameter name="file">{SEA}</Parameter></Datasource></Layer>
</Map>
"""

# z15 tile well inside Monaco's territorial waters, south-east of the port.
SEA_TILE = TileCoord(15, 11948, 17061)


def layer(tmp_path: Path, style: str = STYLE, **extra: object) -> Layer:
    return single_layer(
        tmp_path,
        style,
        name="sea",
        meta_size=4,
        meta_buffer=16,
        dimensions=[{"name": "SHOW", "values": ["yes", "no"], "default": "yes"}],
        **extra,
    )


def colours(data: bytes) -> set[tuple[int, int, int]]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (256, 256)
    return {colour for _, colour in image.getcolors(65536) or []}


async def test_metatile_is_cut_into_encoded_tiles_and_variables_reach_mapnik(
    tmp_path: Path,
) -> None:
    sea = layer(tmp_path)
    renderer = MapnikRenderer([sea], processes=1)
    await renderer.start()
    try:
        metatile = metatile_for(sea.grid, SEA_TILE, 4, 16)
        shown = await renderer.render(sea, metatile, {"SHOW": "yes"})
        assert set(shown) == {cut.coord for cut in metatile.tiles}
        assert len(shown) == 16
        assert colours(shown[SEA_TILE]) == {(0, 0, 255)}
        hidden = await renderer.render(sea, metatile, {"SHOW": "no"})
        assert colours(hidden[SEA_TILE]) == {(255, 255, 255)}
    finally:
        await renderer.close()


async def test_the_render_tells_the_colour_of_the_uniform_tiles(tmp_path: Path) -> None:
    sea = layer(tmp_path, output_format="png:z=1")
    renderer = MapnikRenderer([sea], processes=1)
    await renderer.start()
    try:
        metatile = metatile_for(sea.grid, SEA_TILE, 4, 16)
        shown = await renderer.render(sea, metatile, {"SHOW": "yes"})
        assert isinstance(shown, RenderedTiles)
        assert shown.uniform[SEA_TILE] == (0, 0, 255, 255)
        # The coast crosses the metatile: those tiles are of several colours.
        assert 0 < len(shown.uniform) < len(shown)
        assert all(len(colours(shown[coord])) == 1 for coord in shown.uniform)
        hidden = await renderer.render(sea, metatile, {"SHOW": "no"})
        assert isinstance(hidden, RenderedTiles)
        assert hidden.uniform == dict.fromkeys(hidden, (255, 255, 255, 255))
    finally:
        await renderer.close()


async def test_jpeg_output(tmp_path: Path) -> None:
    sea = layer(tmp_path, extension="jpeg", mime_type="image/jpeg")
    renderer = MapnikRenderer([sea], processes=1)
    await renderer.start()
    try:
        tiles = await renderer.render(sea, metatile_for(sea.grid, SEA_TILE, 4, 16), {"SHOW": "yes"})
        data = tiles[SEA_TILE]
        assert data[:3] == b"\xff\xd8\xff"
        image = Image.open(io.BytesIO(data)).convert("RGB")
        r, g, b = image.getpixel((128, 128))
        assert b > 200 and r < 40 and g < 40
    finally:
        await renderer.close()


async def test_a_style_mapnik_cannot_load_is_a_config_error_naming_the_layer(
    tmp_path: Path,
) -> None:
    broken = layer(tmp_path, style="<Map><Layer name='x'><StyleName>missing</StyleName>")
    renderer = MapnikRenderer([broken], processes=1)
    with pytest.raises(ConfigError, match=r"layers\.sea\.mapfile: Mapnik cannot load it"):
        await renderer.start()


async def test_a_killed_render_process_is_replaced(tmp_path: Path) -> None:
    import os
    import signal

    sea = layer(tmp_path)
    renderer = MapnikRenderer([sea], processes=1)
    await renderer.start()
    try:
        metatile = metatile_for(sea.grid, SEA_TILE, 4, 16)
        await renderer.render(sea, metatile, {"SHOW": "yes"})
        assert renderer._pool is not None
        pool = renderer._pool.executor
        for pid in list(pool._processes):  # the executor's worker processes
            os.kill(pid, signal.SIGKILL)
        tiles = await renderer.render(sea, metatile, {"SHOW": "yes"})
        assert colours(tiles[SEA_TILE]) == {(0, 0, 255)}
    finally:
        await renderer.close()
    with pytest.raises(RenderError):
        await renderer.render(sea, metatile, {"SHOW": "yes"})


async def test_start_starts_every_render_process_with_its_styles(tmp_path: Path) -> None:
    from tileserver.adapters.mapnik_worker import load_errors

    sea = layer(tmp_path)
    renderer = MapnikRenderer([sea], processes=3)
    await renderer.start()
    try:
        assert renderer._pool is not None
        pool = renderer._pool.executor
        # Every process exists before any render (the executor starts one only for a job
        # that finds none idle), and each loaded the style at start.
        assert len(pool._processes) == 3
        assert all(p.is_alive() for p in pool._processes.values())
        assert await asyncio.get_running_loop().run_in_executor(pool, load_errors) == {}
    finally:
        await renderer.close()


@pytest.mark.parametrize("image_format", ["png:z=1", "png", "png8"])
def test_cut_encodes_a_solid_tile_once_and_every_tile_keeps_its_pixels(image_format: str) -> None:
    import mapnik

    from tileserver.adapters import mapnik_worker

    def image(painted: tuple[int, int]) -> mapnik.Image:
        im = mapnik.Image(512, 256)
        im.fill(mapnik.Color(10, 120, 200, 255))
        im.set_pixel(*painted, mapnik.Color(255, 0, 0, 255))
        return im

    cuts = ((5, 0, 0, 0, 0), (5, 0, 1, 256, 0))
    first = mapnik_worker._cut(image((300, 7)), cuts, 256, image_format)
    second = mapnik_worker._cut(image((7, 7)), cuts, 256, image_format)
    assert first[(5, 0, 0)] is second[(5, 0, 1)]  # the solid tile's bytes, encoded once
    # Decoded, each tile is what its view held: solid, or solid with the red pixel.
    for tiles, solid, painted in ((first, (5, 0, 0), (5, 0, 1)), (second, (5, 0, 1), (5, 0, 0))):
        plain = Image.open(io.BytesIO(tiles[solid])).convert("RGBA")
        assert plain.size == (256, 256) and plain.getcolors() == [(65536, (10, 120, 200, 255))]
        dotted = Image.open(io.BytesIO(tiles[painted])).convert("RGBA")
        x = 300 - 256 if painted == (5, 0, 1) else 7
        assert dotted.getpixel((x, 7)) == (255, 0, 0, 255)
        assert sorted(c for _, c in dotted.getcolors()) == [(10, 120, 200, 255), (255, 0, 0, 255)]
    # A different colour is not taken for the cached one.
    other = mapnik.Image(256, 256)
    other.fill(mapnik.Color(0, 0, 0, 0))
    empty = mapnik_worker._cut(other, ((5, 1, 1, 0, 0),), 256, image_format)[(5, 1, 1)]
    assert Image.open(io.BytesIO(empty)).convert("RGBA").getcolors() == [(65536, (0, 0, 0, 0))]


def die_while_sending_the_result(job: object) -> None:
    """Run in a render process: dies as one SIGKILLed while it sends a large result does
    (as the faults-under-load test caught): the result lock held, the start of a message on
    the result pipe, the rest never written."""
    import gc
    import struct
    from multiprocessing.queues import SimpleQueue

    results = next(o for o in gc.get_objects() if isinstance(o, SimpleQueue))
    results._wlock.acquire()
    os.write(results._writer.fileno(), struct.pack("!i", 1 << 20) + b"\0" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)


async def test_a_process_killed_while_sending_its_result_does_not_hang_the_renders(
    tmp_path: Path,
) -> None:
    """The pool's manager thread would wait for the rest of that message forever, and the
    jobs with it, without ever noticing the dead process: the renderer notices, ends that
    pool and renders in a new one."""
    sea = layer(tmp_path)
    renderer = MapnikRenderer([sea], processes=2, timeout=30)
    await renderer.start()
    metatile = metatile_for(sea.grid, SEA_TILE, 4, 16)
    try:
        waiting = asyncio.create_task(renderer.render(sea, metatile, {"SHOW": "yes"}))
        # Noticed as a dead process, not by the render timeout ("render took longer").
        with pytest.raises(RenderError, match="render process died"):
            await renderer._run(die_while_sending_the_result, None)  # dies in both pools
        tiles = await waiting  # a render waiting in the same pool got its answer
        assert colours(tiles[SEA_TILE]) == {(0, 0, 255)}
        tiles = await renderer.render(sea, metatile, {"SHOW": "no"})
        assert colours(tiles[SEA_TILE]) == {(255, 255, 255)}
        assert (await renderer.check())[0] is None
    finally:
        async with asyncio.timeout(20):  # no pool left hanging: close ends
            await renderer.close()


# --- plain PNG layers: Mapnik's raw pixels cut and encoded by pillow_cut and png_encoder ---

DEMO_STYLE = ROOT / "config" / "styles" / "osm.xml"
# Monte-Carlo at z17 (the benchmarks' one cold tile): buildings, roads, labels, sea.
MONTE_CARLO = TileCoord(17, 47790, 68240)

# No background; a half-transparent sea over a transparent map, so that Mapnik's image
# is premultiplied where it is neither opaque nor empty.
TRANSLUCENT = f"""<Map srs="epsg:3857">
  <Style name="sea"><Rule><PolygonSymbolizer fill="#2050c0" fill-opacity="0.45"/>
    <LineSymbolizer stroke="#ff0000" stroke-width="3" stroke-opacity="0.7"/></Rule></Style>
  <Layer name="sea" srs="epsg:3857"><StyleName>sea</StyleName>
    <Datasource><Parameter name="type">geojson</Parameter>
      <Parameter name="file">{SEA}</Parameter></Datasource></Layer>
</Map>
"""


def demo_layer(tmp_path: Path, image_format: str) -> Layer:
    from tests.support.configs import mercator_grid
    from tileserver.config import parse_config

    options = {"type": "mapnik", "mapfile": str(DEMO_STYLE), "grid": "g", "meta_size": 8,
               "meta_buffer": 32, "output_format": image_format}  # fmt: skip
    config = parse_config({"grids": {"g": mercator_grid()}, "layers": {"osm": options}}, tmp_path)
    return config.layers["osm"]


def mapnik_own_tiles(layer: Layer, coord: TileCoord, image_format: str) -> dict[TileCoord, bytes]:
    """The metatile rendered in this process and each tile encoded by Mapnik itself."""
    import mapnik

    metatile = metatile_for(layer.grid, coord, layer.effective_meta_size, layer.meta_buffer)
    m = mapnik.Map(metatile.width, metatile.height)
    mapnik.load_map(m, str(layer.mapfile))
    m.srs = "epsg:3857"
    m.zoom_to_box(mapnik.Box2d(*metatile.bbox.as_tuple()))
    image = mapnik.Image(metatile.width, metatile.height)
    mapnik.render(m, image)
    size = layer.grid.tile_size
    return {
        t.coord: image.view(t.x, t.y, size, size).to_string(image_format) for t in metatile.tiles
    }


def rgba(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    image = Image.open(io.BytesIO(data))
    return image.format or "", image.size, image.convert("RGBA").tobytes()


@pytest.mark.parametrize("image_format", ["png:z=1", "png"])
async def test_demo_style_tiles_have_exactly_mapniks_pixels(
    tmp_path: Path, image_format: str
) -> None:
    osm = demo_layer(tmp_path, image_format)
    renderer = MapnikRenderer([osm], processes=1)
    await renderer.start()
    try:
        metatile = metatile_for(osm.grid, MONTE_CARLO, 8, 32)
        ours = await renderer.render(osm, metatile, {})
    finally:
        await renderer.close()
    theirs = mapnik_own_tiles(osm, MONTE_CARLO, image_format)
    assert ours.keys() == theirs.keys() and len(ours) == 64
    for coord, data in ours.items():
        assert rgba(data) == rgba(theirs[coord]), coord
        # the mode Mapnik's own encoder writes, though the map is opaque
        assert Image.open(io.BytesIO(data)).mode == Image.open(io.BytesIO(theirs[coord])).mode
        assert Image.open(io.BytesIO(data)).mode == "RGBA"
    assert len({rgba(d)[2] for d in ours.values()}) > 30  # real content, not one colour


async def test_translucent_pixels_are_those_mapnik_encodes(tmp_path: Path) -> None:
    sea = single_layer(tmp_path, TRANSLUCENT, name="sea", meta_size=4, meta_buffer=16,
                       output_format="png:z=1")  # fmt: skip
    # the z14 metatile holding Monaco's coast: sea, land (transparent) and the outline
    coord = TileCoord(14, 5974, 8530)
    renderer = MapnikRenderer([sea], processes=1)
    await renderer.start()
    try:
        ours = await renderer.render(sea, metatile_for(sea.grid, coord, 4, 16), {})
    finally:
        await renderer.close()
    theirs = mapnik_own_tiles(sea, coord, "png:z=1")
    alphas: set[int] = set()
    for key, data in ours.items():
        assert rgba(data) == rgba(theirs[key]), key
        image = Image.open(io.BytesIO(data))
        if image.mode == "RGBA":
            alphas.update(a for _, (*_, a) in image.getcolors(65536) or [])
    assert any(0 < a < 255 for a in alphas)  # half-transparent pixels were there


def test_first_tiles_reach_renders_in_an_event_loop_other_than_the_pools(
    tmp_path: Path,
) -> None:
    """Answer first over a pool started in another event loop (the tests share started
    pools between servers, each with its loop): every render hands its first tile over,
    none fails on the channel of first tiles."""
    sea = layer(tmp_path)
    renderer = MapnikRenderer([sea], processes=1)
    asyncio.run(renderer.start())
    metatile = metatile_for(sea.grid, SEA_TILE, 4, 16)

    async def renders() -> list[tuple[bytes, bytes]]:
        handed: list[tuple[bytes, bytes]] = []
        for _ in range(3):
            got: list[bytes] = []
            tiles = await renderer.render(
                sea, metatile, {"SHOW": "yes"}, first=SEA_TILE, on_first=got.append
            )
            assert len(got) == 1
            handed.append((got[0], tiles[SEA_TILE]))
        return handed

    try:
        for _ in range(2):  # a loop, closed, then another
            for early, returned in asyncio.run(renders()):
                assert early == returned and colours(early) == {(0, 0, 255)}
    finally:
        asyncio.run(renderer.close())
