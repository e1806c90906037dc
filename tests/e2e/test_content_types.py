"""Served bytes always are what the Content-Type says (issue 13): every image format a
layer can have (each PNG and JPEG encoder name, the `jpg` extension), on every path a tile
takes (a Mapnik render, a WMS answer cut, the in-process cache, a pre-generated tile read
from the store, the blank tile of a missing one), in REST and KVP, the bytes sniffed by
their magic number and decoded by Pillow. (webp is not offered: check-config refuses any
extension but png, jpeg and jpg.)"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from PIL import Image

from tests.support.configs import mercator_grid
from tests.support.mapserver import MapServerWMS, monaco_wms
from tests.support.server import STYLE, Response, TileServer, fetch

pytestmark = pytest.mark.e2e

OSM_BBOX = [824000, 5421800, 829500, 5428000]  # Monaco, EPSG:3857
ON_DEMAND = (17, 47790, 68240)  # z, row, col inside OSM_BBOX
STORED = (15, 11947, 17060)  # the level pre-generated into the store
MISSING = (14, 5973, 8530)  # a pre-generated level left empty: missing_tile: transparent
MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
PILLOW = {"image/png": "PNG", "image/jpeg": "JPEG"}

# Every encoder name a layer may give, for its extension.
FORMATS: dict[str, dict[str, str]] = {
    "png": {},  # png:z=1, the default
    "png6": {"output_format": "png"},
    "png_z9": {"output_format": "png:z=9"},
    "png32": {"output_format": "png32"},
    "png8": {"output_format": "png8"},
    "png8_hextree": {"output_format": "png8:m=h"},
    "png256": {"output_format": "png256"},
    "jpeg": {"extension": "jpeg"},  # jpeg85, the default
    "jpg": {"extension": "jpg"},
    "jpeg70": {"extension": "jpeg", "output_format": "jpeg70"},
    "jpeg_mime": {"extension": "jpeg", "mime_type": "image/jpeg", "output_format": "jpeg"},
}


def layers(wms: MapServerWMS) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, options in FORMATS.items():
        found[f"mapnik_{name}"] = {"type": "mapnik", "mapfile": str(STYLE), **options}
        found[f"wms_{name}"] = {"type": "wms", "url": wms.url, "layers": "osm", **options}
    for name in ("png", "jpeg"):
        found[f"stored_{name}"] = {
            "type": "mapnik", "mapfile": str(STYLE), **FORMATS[name], "cache": "local",
            "min_resolution_seed": mercator_grid()["resolutions"][STORED[0]],
            "missing_tile": "transparent",
        }  # fmt: skip
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TileServer]:
    workdir = tmp_path_factory.mktemp("content-types")
    with monaco_wms() as wms:
        config = {
            "grids": {"epsg3857": mercator_grid()},
            "caches": {"local": {"type": "filesystem", "folder": str(workdir / "tiles")}},
            "layer_default": {"grid": "epsg3857", "bbox": OSM_BBOX, "meta_size": 2},
            "layers": layers(wms),
        }
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        generated = subprocess.run(
            [sys.executable, "-m", "tileserver", "generate", "--config", str(path),
             "--layer", "stored_png", "--layer", "stored_jpeg", "--zoom", str(STORED[0])],
            capture_output=True, text=True, timeout=300, check=False, cwd=workdir,
        )  # fmt: skip
        assert generated.returncode == 0, generated.stderr
        server = TileServer(config, workdir, render_processes=2)
        server.start()
        yield server
        server.stop()


def assert_bytes_are_the_content_type(answer: Response, mime_type: str, where: str) -> None:
    assert answer.status == 200, (where, answer.status, answer.body[:300])
    assert answer.headers["content-type"] == mime_type, where
    assert answer.body.startswith(MAGIC[mime_type]), (where, answer.body[:16])
    image = Image.open(io.BytesIO(answer.body))
    image.load()
    assert (image.format, image.size) == (PILLOW[mime_type], (256, 256)), where


def rest(server: TileServer, layer: str, extension: str, tile: tuple[int, int, int]) -> Response:
    z, row, col = tile
    return server.get(f"/wmts/1.0.0/{layer}/default/epsg3857/{z}/{row}/{col}.{extension}")


def kvp(server: TileServer, layer: str, mime_type: str, tile: tuple[int, int, int]) -> Response:
    z, row, col = tile
    params = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": layer,
              "STYLE": "default", "FORMAT": mime_type, "TILEMATRIXSET": "epsg3857",
              "TILEMATRIX": str(z), "TILEROW": str(row), "TILECOL": str(col)}  # fmt: skip
    return fetch(f"{server.base}/wmts?{urlencode(params)}")


@pytest.mark.parametrize("kind", ["mapnik", "wms"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_rendered_and_cached_tiles_are_their_content_type(
    server: TileServer, kind: str, name: str
) -> None:
    layer = f"{kind}_{name}"
    extension = FORMATS[name].get("extension", "png")
    mime_type = "image/jpeg" if extension in ("jpeg", "jpg") else "image/png"
    rendered = rest(server, layer, extension, ON_DEMAND)
    assert rendered.headers.get("x-tile-source") == "render"
    assert_bytes_are_the_content_type(rendered, mime_type, f"{layer} rendered")
    cached = kvp(server, layer, mime_type, ON_DEMAND)
    assert cached.headers.get("x-tile-source") == "memory"
    assert_bytes_are_the_content_type(cached, mime_type, f"{layer} cached")
    assert cached.body == rendered.body


@pytest.mark.parametrize("name", ["png", "jpeg"])
def test_stored_and_missing_tiles_are_their_content_type(server: TileServer, name: str) -> None:
    layer, mime_type = f"stored_{name}", f"image/{name}"
    stored = rest(server, layer, name, STORED)
    assert stored.headers.get("x-tile-source") == "store"
    assert_bytes_are_the_content_type(stored, mime_type, f"{layer} stored")
    missing = kvp(server, layer, mime_type, MISSING)
    assert missing.headers.get("x-tile-source") == "missing"
    assert_bytes_are_the_content_type(missing, mime_type, f"{layer} missing")
    on_demand = rest(server, layer, name, ON_DEMAND)
    assert on_demand.headers.get("x-tile-source") == "render"
    assert_bytes_are_the_content_type(on_demand, mime_type, f"{layer} on demand")


def test_a_layer_is_served_under_its_own_extension_and_format_only(server: TileServer) -> None:
    assert rest(server, "mapnik_jpeg", "png", ON_DEMAND).status == 400
    assert kvp(server, "mapnik_png", "image/jpeg", ON_DEMAND).status == 400
    # jpg and jpeg name the same format: a `jpg` layer answers .jpg only, as image/jpeg.
    assert rest(server, "mapnik_jpg", "jpg", ON_DEMAND).headers["content-type"] == "image/jpeg"
