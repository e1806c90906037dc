"""Pre-generated levels served from a folder and from S3; finer levels rendered on demand
(the real application, served in the test process)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from lxml import etree
from PIL import Image

from tests.support.app_server import AppServer
from tests.support.daemons import Memcached
from tests.support.images import plant, planted_png
from tests.support.s3 import SeaweedS3
from tests.support.schemas import validate_exception_report
from tests.support.server import demo_config
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.adapters.s3_store import S3Store
from tileserver.store_layout import tile_path

# z17 (1.194 m) is pre-generated with min_resolution_seed 1.19; z18 (0.597 m) is not.
SEED = 1.19
ROW, COL = 47790, 68240


RED = planted_png((255, 0, 0))


def path17(row: int = ROW, col: int = COL) -> str:
    return tile_path("", "osm", "default", (), "epsg3857", "17", row, col, "png")


def rest(row: int, col: int, z: int = 17) -> str:
    return f"/wmts/1.0.0/osm/default/epsg3857/{z}/{row}/{col}.png"


def kvp(row: int, col: int, z: int = 17) -> str:
    return "/wmts?" + urlencode({
        "SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": "osm",
        "STYLE": "default", "FORMAT": "image/png", "TILEMATRIXSET": "epsg3857",
        "TILEMATRIX": str(z), "TILEROW": str(row), "TILECOL": str(col),
    })  # fmt: skip


def config_with(memcached: Memcached, cache: dict[str, Any], **osm: Any) -> dict[str, Any]:
    config = demo_config(memcached.address, osm={"cache": "tiles", "min_resolution_seed": SEED,
                                                 **osm})  # fmt: skip
    config["caches"] = {"tiles": cache}
    return config


def test_folder_store_serves_pregenerated_levels_and_renders_the_finer_ones(
    memcached: Memcached, app_server: Callable[..., AppServer], tmp_path: Path
) -> None:
    folder = tmp_path / "tiles"
    plant(FilesystemStore(folder), {path17(): RED})
    server = app_server(config_with(memcached, {"type": "filesystem", "folder": str(folder)}))

    for url in (rest(ROW, COL), kvp(ROW, COL)):
        r = server.get(url)
        assert r.status == 200
        assert r.headers["x-tile-source"] == "store"
        assert r.headers["content-type"] == "image/png"
        assert r.body == RED
    # Finer level: on demand, as before.
    fine = server.get(rest(ROW * 2, COL * 2, z=18))
    assert fine.headers["x-tile-source"] == "render"
    # A pre-generated tile missing from the store renders on demand by default.
    missing = server.get(rest(ROW, COL + 1))
    assert missing.status == 200
    assert missing.headers["x-tile-source"] == "render"
    image = Image.open(io.BytesIO(missing.body))
    assert image.size == (256, 256)
    assert len(image.convert("RGB").getcolors(65536) or []) > 20


@pytest.mark.parametrize("policy", ["no_content", "transparent"])
def test_missing_pregenerated_tile_policies(
    policy: str, memcached: Memcached, app_server: Callable[..., AppServer], tmp_path: Path
) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    cache = {"type": "filesystem", "folder": str(folder)}
    server = app_server(config_with(memcached, cache, missing_tile=policy))
    r = server.get(rest(ROW, COL))
    assert r.headers["x-tile-source"] == "missing"
    if policy == "no_content":
        assert r.status == 204
        assert r.body == b""
    else:
        assert r.status == 200
        image = Image.open(io.BytesIO(r.body))
        assert image.size == (256, 256)
        assert image.mode == "RGBA"
        assert image.getextrema()[3] == (0, 0)  # alpha 0 everywhere
    assert server.renders() == 0


@pytest.fixture
def seaweed() -> Iterator[SeaweedS3]:
    """A SeaweedFS of this test's own: it stops it (not the session's)."""
    server = SeaweedS3()
    server.start()
    yield server
    server.stop()


def test_s3_store_serves_pregenerated_levels_and_fails_fast_when_s3_is_down(
    seaweed: SeaweedS3,
    memcached: Memcached,
    app_server: Callable[..., AppServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SeaweedS3.env().items():
        monkeypatch.setenv(name, value)
    store = S3Store(seaweed.bucket, "pregen", endpoint_url=seaweed.endpoint_url)
    plant(store, {path17(): RED, path17(col=COL + 1): planted_png((0, 0, 255))})
    cache = {"type": "s3", "bucket": seaweed.bucket, "folder": "pregen",
             "endpoint_url": seaweed.endpoint_url}  # fmt: skip
    server = app_server(config_with(memcached, cache), env=SeaweedS3.env())

    assert server.get(rest(ROW, COL)).body == RED
    blue = server.get(kvp(ROW, COL + 1))
    assert blue.headers["x-tile-source"] == "store"
    assert Image.open(io.BytesIO(blue.body)).getpixel((5, 5)) == (0, 0, 255)

    seaweed.stop()
    started = time.monotonic()
    down = server.get(rest(ROW, COL))
    assert time.monotonic() - started < 5, "a dead S3 must not hang the request"
    assert down.status == 503
    validate_exception_report(down.body)
    code = etree.fromstring(down.body)[0].get("exceptionCode")
    assert code == "NoApplicableCode"
    # On-demand levels do not depend on S3.
    assert server.get(rest(ROW * 2, COL * 2, z=18)).status == 200
