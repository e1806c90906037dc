"""TileCloud-chain's own configuration files (../shared/tcc-configs), served unchanged
(issue 13): a tile of every layer on every grid, decoded and compared with what the WMS
draws, and the Capabilities read by OWSLib.

Each file is copied into a folder with the fixtures it names: `mapfile/test.mapnik` is the
project's demo style (its data beside it). Its WMS URLs (`http://mapserver:8080/`,
`http://localhost/mapserv`, `http://mapserver/`) name TileCloud-chain's test machines:
they reach the test MapServer (tests/data/mapserver/tcc.map, the layers those files ask
for) through the environment, the runner being the server's HTTP proxy (HTTP_PROXY, which
tileserver honours as TileCloud-chain does). Tiles are asked at levels rendered on demand,
so the files' stores (/tmp/tiles...) are not read.

The demo data (Monaco) is outside the Swiss grid of these files: a Mapnik layer's tile is
the style's background, rendered (the uniform colour is checked). The scaffold file names
MapCache's Memcached at localhost:11211: TILESERVER_MEMCACHED_SERVERS points every file at
a Memcached of the test's own.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
from PIL import Image, ImageChops

from tests.support.daemons import Memcached
from tests.support.mapserver import MapServerWMS, tcc_wms
from tests.support.schemas import validate_capabilities
from tests.support.server import ROOT, TileServer
from tests.support.tcc_configs import TCC_CONFIGS, needs_tcc_configs
from tests.support.wms_runner import DIRECT_HEADER
from tileserver.config import Config, Layer
from tileserver.config_loader import MEMCACHED_SERVERS, load_config
from tileserver.types import TileCoord

pytestmark = [pytest.mark.e2e, needs_tcc_configs]

FILES = ["scaffold-config.yaml", "test-1.9.4.yaml", "test-master.yaml",
         "test-multidim-master.yaml"]  # fmt: skip
CENTRE = (555000.0, 175000.0)  # EPSG:21781: where tcc.map draws its features
BACKGROUND = (240, 237, 230, 255)  # config/styles/osm.xml's background-color


@pytest.fixture(scope="module")
def wms() -> Iterator[MapServerWMS]:
    with tcc_wms() as server:
        yield server


def copied(name: str, folder: Path) -> Path:
    """The file, byte for byte, in folder with the fixtures it names."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(TCC_CONFIGS / name, folder / name)
    (folder / "mapfile").mkdir(exist_ok=True)
    shutil.copy(ROOT / "config" / "styles" / "osm.xml", folder / "mapfile" / "test.mapnik")
    (folder / "data").symlink_to(ROOT / "config" / "data")
    assert (folder / name).read_bytes() == (TCC_CONFIGS / name).read_bytes()
    return folder / name


def tile_at(layer: Layer, x: float, y: float) -> tuple[int, int, int]:
    """(z, row, col) of the tile holding (x, y) at the layer's deepest level on-demand."""
    grid = layer.grid
    z = max(z for z in range(len(grid.resolutions)) if layer.is_on_demand(z))
    span = grid.tile_span(z)
    return z, math.floor((grid.bbox.maxy - y) / span), math.floor((x - grid.bbox.minx) / span)


def rgba(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size == (256, 256)
    return image.convert("RGBA")


def differing(a: Image.Image, b: Image.Image, tolerance: int) -> int:
    """Pixels where a channel differs by more than tolerance."""
    red, green, blue, alpha = ImageChops.difference(a, b).split()
    most = ImageChops.lighter(ImageChops.lighter(red, green), ImageChops.lighter(blue, alpha))
    return sum(count for value, count in enumerate(most.histogram()) if value > tolerance)


def direct_getmap(wms: MapServerWMS, layer: Layer, z: int, row: int, col: int,
                  dimensions: dict[str, str]) -> bytes:  # fmt: skip
    """What the WMS draws for that tile alone (not counted, never faulted)."""
    assert layer.wms is not None
    bbox = layer.grid.tile_bbox(TileCoord(z, row, col))
    params = wms.getmap_params(bbox.as_tuple(), 256, 256, srs=layer.grid.srs,
                               layers=layer.wms.layers, image_format=layer.mime_type)  # fmt: skip
    params.update(dimensions)
    answer = wms.get(params, {DIRECT_HEADER: "1"})
    assert answer.status == 200 and answer.headers["content-type"] == layer.mime_type
    return answer.body


@pytest.fixture(scope="module")
def memcached() -> Iterator[Memcached]:
    daemon = Memcached()
    daemon.start()
    yield daemon
    daemon.stop()


@contextmanager
def serve(
    name: str, folder: Path, wms: MapServerWMS, memcached: Memcached
) -> Iterator[tuple[Config, TileServer]]:
    """`tileserver serve` of the file `name`, copied into folder."""
    path = copied(name, folder / "tilegeneration")
    # Our Memcached, not the one a file names (the scaffold's MapCache one, localhost:11211).
    env = {**wms.proxy_environment(), MEMCACHED_SERVERS: memcached.address}
    config = load_config(path, env)
    assert config.memcached is not None and config.memcached.servers[0][1] == memcached.port
    server = TileServer(path, folder, render_processes=2, env=env)
    server.start()
    try:
        assert f"tile cache: memcached {memcached.address}" in server.log()
        yield config, server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=FILES)
def served(
    request: pytest.FixtureRequest,
    wms: MapServerWMS,
    memcached: Memcached,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Config, TileServer]]:
    folder = tmp_path_factory.mktemp(request.param.removesuffix(".yaml"))
    with serve(request.param, folder, wms, memcached) as served:
        yield served


def test_a_tile_of_every_layer_and_grid(
    served: tuple[Config, TileServer], wms: MapServerWMS
) -> None:
    config, server = served
    assert config.layers
    fetched = 0
    for base in config.layers.values():
        for layer in base.variants():
            z, row, col = tile_at(layer, *CENTRE)
            dims = {d.name: d.default for d in layer.dimensions}
            rest = "/".join(
                [layer.name, layer.wmts_style, *dims.values(), layer.grid.name,
                 layer.grid.matrix_id(z), str(row), f"{col}.{layer.extension}"]
            )  # fmt: skip
            answer = server.get(f"/wmts/1.0.0/{rest}")
            where = f"{rest} ({server.config_path.name})"
            if layer.wms is not None and "point_error" in layer.wms.layers:
                # TileCloud-chain's deliberately broken layer: MapServer has no such layer,
                # and the server answers 502 saying so (not in the WMS's words).
                assert answer.status == 502, where
                assert b"The WMS of layer 'point_error' answered a ServiceException" \
                    in answer.body, answer.body  # fmt: skip
                continue
            assert answer.status == 200, (where, answer.body[:500])
            assert answer.headers["content-type"] == layer.mime_type, where
            image = rgba(answer.body)
            fetched += 1
            if layer.type == "mapnik":
                assert image.getcolors(1) == [(256 * 256, BACKGROUND)], where
                continue
            assert len(image.getcolors(65536) or []) > 1, f"{where}: a blank tile"
            reference = rgba(direct_getmap(wms, layer, z, row, col, dims))
            lossy = layer.mime_type == "image/jpeg"
            wrong = differing(image, reference, 24 if lossy else 2)
            assert wrong < 256 * 256 // 100, f"{where}: {wrong} pixels differ"
    assert fetched >= len(config.layers) - 1


def test_each_value_of_a_dimension_reaches_the_wms(
    wms: MapServerWMS, memcached: Memcached, tmp_path: Path
) -> None:
    """test-multidim-master.yaml's POINT_NAME: point1 and point2 draw other points."""
    with serve("test-multidim-master.yaml", tmp_path, wms, memcached) as (config, server):
        layer = config.layers["multi"]
        z, row, col = tile_at(layer, *CENTRE)
        tiles = {}
        for value in ("point1", "point2"):
            answer = server.get(f"/wmts/1.0.0/multi/default/{value}/swissgrid/{z}/{row}/{col}.png")
            assert answer.status == 200
            tiles[value] = rgba(answer.body)
            reference = direct_getmap(wms, layer, z, row, col, {"POINT_NAME": value})
            assert differing(tiles[value], rgba(reference), 2) < 256 * 256 // 100
        assert differing(tiles["point1"], tiles["point2"], 2) > 100


def test_owslib_reads_the_capabilities_and_fetches_a_tile(
    served: tuple[Config, TileServer],
) -> None:
    from owslib.wmts import WebMapTileService

    config, server = served
    capabilities = server.get("/wmts/1.0.0/WMTSCapabilities.xml")
    assert capabilities.status == 200
    validate_capabilities(capabilities.body)
    wmts = WebMapTileService(server.base + "/wmts/1.0.0/WMTSCapabilities.xml")
    assert set(wmts.contents) == set(config.layers)
    used = {grid for layer in config.layers.values() for grid in layer.grid_names}
    assert set(wmts.tilematrixsets) == used
    name = next(n for n, layer in config.layers.items() if layer.type == "wms"
                and "point_error" not in (layer.wms.layers if layer.wms else ""))  # fmt: skip
    layer = config.layers[name]
    z, row, col = tile_at(layer, *CENTRE)
    tile = wmts.gettile(
        layer=name, tilematrixset=layer.grid.name, tilematrix=layer.grid.matrix_id(z), row=row,
        column=col, format=layer.mime_type, style=layer.wmts_style,
        **{d.name: d.default for d in layer.dimensions},
    )  # fmt: skip
    image = rgba(tile.read())
    assert len(image.getcolors(65536) or []) > 1
    kvp = {"SERVICE": "WMTS", "REQUEST": "GetCapabilities"}
    assert server.get("/wmts?" + urlencode(kvp)).body == capabilities.body
