"""One contract every Renderer passes: Mapnik's render processes (a GeoJSON style), a WMS
layer over the MapServer fixture (cut by the same processes, or by threads of the test's
own process as generate_tiles cuts them), and the fake of the service tests: every tile of
the metatile, and only those asked for, encoded in the layer's format at the grid's tile
size; the same bytes for the same metatile; renders at once; a closed renderer raises
RenderError."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.support.configs import mercator_grid
from tests.support.fakes import FakeRenderer
from tests.support.mapserver import MapServerWMS
from tileserver.adapters.renderers import LayerRenderer
from tileserver.adapters.threaded_cut import ThreadedWmsRenderer
from tileserver.config import Layer, parse_config
from tileserver.errors import RenderError
from tileserver.grid import Metatile, metatile_for
from tileserver.protocols import Renderer
from tileserver.types import TileCoord

ROOT = Path(__file__).resolve().parents[2]
SEA = ROOT / "config" / "data" / "sea.geojson"
STYLE = f"""<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="sea"><Rule><PolygonSymbolizer fill="#0000ff"/></Rule></Style>
  <Layer name="sea" srs="epsg:3857"><StyleName>sea</StyleName>
    <Datasource><Parameter name="type">geojson</Parameter>
      <Parameter name="file">{SEA}</Parameter></Datasource></Layer>
</Map>
"""
META = 2
# A z16 tile over Port Hercule, Monaco: sea and land, in the WMS data and in sea.geojson.
MONACO = TileCoord(16, 23896, 34120)


def solid_png(layer: Layer) -> bytes:
    size = layer.grid.tile_size
    out = io.BytesIO()
    Image.new("RGB", (size, size), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


@dataclass
class Rendering:
    renderer: Renderer
    layer: Layer

    def metatile(self, coord: TileCoord = MONACO) -> Metatile:
        return metatile_for(self.layer.grid, coord, self.layer.meta_size, self.layer.meta_buffer)


def make_layer(tmp_path: Path, kind: str, url: str = "") -> Layer:
    layer: dict[str, object] = {"grid": "g", "meta_size": META, "meta_buffer": 16}
    if kind == "wms":
        layer.update(type="wms", url=url, layers="osm", retries=0, timeout=60)
    else:
        (tmp_path / "style.xml").write_text(STYLE)
        layer.update(type="mapnik", mapfile=str(tmp_path / "style.xml"))
    config = parse_config({"grids": {"g": mercator_grid()}, "layers": {"l": layer}}, tmp_path)
    return config.layers["l"]


@pytest.fixture(params=["mapnik", "wms", "wms-threads", "fake"])
async def rendering(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rendering]:
    renderer: Renderer
    if request.param == "fake":
        layer = make_layer(tmp_path, "mapnik")
        renderer = FakeRenderer(image=solid_png)
    elif request.param == "wms-threads":
        layer = make_layer(tmp_path, "wms", request.getfixturevalue("mapserver").url)
        threaded = ThreadedWmsRenderer(2)
        await threaded.start()
        renderer = threaded
    else:
        url = request.getfixturevalue("mapserver").url if request.param == "wms" else ""
        layer = make_layer(tmp_path, request.param, url)
        layers = LayerRenderer([layer], processes=1)
        await layers.start()
        renderer = layers
    yield Rendering(renderer, layer)
    await renderer.close()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def test_every_tile_of_the_metatile_is_an_image_of_the_layer_format(
    rendering: Rendering,
) -> None:
    metatile = rendering.metatile()
    tiles = await rendering.renderer.render(rendering.layer, metatile, {})
    assert set(tiles) == {t.coord for t in metatile.tiles}
    assert len(tiles) == META * META
    for data in tiles.values():
        image = decoded(data)
        assert (image.format, image.size) == ("PNG", (256, 256))
        assert image.getextrema() is not None


async def test_only_the_tiles_asked_for_are_returned(rendering: Rendering) -> None:
    metatile = rendering.metatile()
    wanted = {metatile.tiles[0].coord, metatile.tiles[-1].coord}
    tiles = await rendering.renderer.render(rendering.layer, metatile, {}, only=wanted)
    assert set(tiles) == wanted
    every = await rendering.renderer.render(rendering.layer, metatile, {})
    assert all(tiles[coord] == every[coord] for coord in wanted)


async def test_a_metatile_is_rendered_the_same_twice(rendering: Rendering) -> None:
    metatile = rendering.metatile()
    first = await rendering.renderer.render(rendering.layer, metatile, {})
    again = await rendering.renderer.render(rendering.layer, metatile, {})
    assert first == again


async def test_a_metatile_at_the_grid_edge_has_only_the_grid_tiles(rendering: Rendering) -> None:
    metatile = rendering.metatile(TileCoord(0, 0, 0))  # level 0: a single tile
    tiles = await rendering.renderer.render(rendering.layer, metatile, {})
    assert list(tiles) == [TileCoord(0, 0, 0)]
    assert decoded(tiles[TileCoord(0, 0, 0)]).size == (256, 256)


async def test_renders_at_once_each_get_their_own_tiles(rendering: Rendering) -> None:
    coords = [TileCoord(16, MONACO.row, MONACO.col + META * i) for i in range(4)]
    metatiles = [rendering.metatile(coord) for coord in coords]
    results = await asyncio.gather(
        *(rendering.renderer.render(rendering.layer, m, {}) for m in metatiles)
    )
    for metatile, tiles in zip(metatiles, results, strict=True):
        assert set(tiles) == {t.coord for t in metatile.tiles}


async def test_answer_first_hands_over_the_first_tile_before_the_others(
    rendering: Rendering,
) -> None:
    """With `first`, that tile's bytes reach `on_first` once, before `render` returns, and
    are the bytes it returns for that tile (the same pixels as a render without it); the
    render still returns every tile."""
    metatile = rendering.metatile()
    first = metatile.tiles[-1].coord  # not the one a plain cut encodes first
    handed: list[tuple[bytes, bool]] = []
    returned = False

    def on_first(data: bytes) -> None:
        handed.append((data, returned))

    tiles = await rendering.renderer.render(
        rendering.layer, metatile, {}, first=first, on_first=on_first
    )
    returned = True
    await asyncio.sleep(0)  # a first tile delivered late would show now
    assert len(handed) == 1 and handed[0] == (tiles[first], False)
    assert set(tiles) == {t.coord for t in metatile.tiles}
    plain = await rendering.renderer.render(rendering.layer, metatile, {})
    assert plain == tiles
    assert decoded(handed[0][0]).tobytes() == decoded(plain[first]).tobytes()


async def test_a_closed_renderer_raises_render_error(rendering: Rendering) -> None:
    await rendering.renderer.close()
    with pytest.raises(RenderError):
        async with asyncio.timeout(60):  # a hang fails here
            await rendering.renderer.render(rendering.layer, rendering.metatile(), {})


async def test_the_wms_case_renders_a_map_from_mapserver(mapserver: MapServerWMS) -> None:
    """The WMS case renders from MapServer, not from a stand-in: its GetMaps are counted,
    and the tiles show the Monaco data."""
    before = mapserver.getmap_count()
    layer = make_layer(Path("/nonexistent"), "wms", mapserver.url)
    renderer = LayerRenderer([layer], processes=1)
    await renderer.start()
    try:
        metatile = metatile_for(layer.grid, MONACO, META, 16)
        tiles = await renderer.render(layer, metatile, {})
    finally:
        await renderer.close()
    assert mapserver.getmap_count() == before + 1  # one GetMap for the whole metatile
    colours = decoded(tiles[MONACO]).convert("RGB").getcolors(65536)
    assert colours is not None and len(colours) > 10  # a map, not a blank tile
