"""Unit tests of the hot path's headers (`web/hot_path.py`): made once per second and
reused within it, they still follow the clock (Expires) and the tile (ETag,
Last-Modified), and a layer with stale windows gets its Cache-Control for each answer.
The answers as a whole are compared with the application's in tests/e2e/test_hot_path.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from tests.support.configs import single_layer
from tileserver.config import Layer
from tileserver.tile_request import TileRequest
from tileserver.types import Tile, TileCoord
from tileserver.web.hot_path import PREFIX, HotPath

T = 1_800_000_000  # the clock's second at the start of each test
PATH = "l/default/g/5/3/4.png"


@dataclass
class FakeTiles:
    """The hot tier's read: the tile it holds now (None: not held)."""

    tile: Tile | None = None
    hot: object | None = field(default_factory=object)  # the hot tier (None: off)

    def hot_reader(self, request: TileRequest) -> Any:
        return lambda: self.tile


@dataclass
class FakeBackends:
    tiles: FakeTiles
    rest_paths: dict[str, Any] = field(default_factory=dict)
    face_paths: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeRuntime:
    current: FakeBackends
    metrics: None = None


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = T + 0.25
        monkeypatch.setattr(time, "time", lambda: self.now)


def hot_path(layer: Layer) -> tuple[HotPath, FakeTiles]:
    tiles = FakeTiles()
    backends = FakeBackends(tiles)
    backends.rest_paths[PATH] = TileRequest(layer, "default", (), TileCoord(5, 3, 4))
    return HotPath(FakeRuntime(backends), fallback=None), tiles  # type: ignore[arg-type]


def get(path: HotPath, **headers: str) -> Any:
    response = path.answer(make_mocked_request("GET", PREFIX + PATH, headers=headers))
    assert response is not None
    return response


def test_headers_follow_the_clock_and_the_tile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    layer = single_layer(tmp_path, expires=1)  # one hour
    path, tiles = hot_path(layer)
    tiles.tile = Tile(b"one", "hot", T - 100.5, '"1"')
    first = get(path)
    assert first.status == 200 and first.body == b"one"
    assert first.headers["Expires"] == formatdate(T + 3600, usegmt=True)
    assert first.headers["Last-Modified"] == formatdate(T - 101, usegmt=True)
    assert first.headers["ETag"] == '"1"'
    assert first.headers["Cache-Control"] == "public, max-age=3600"
    assert first.headers["Content-Type"] == "image/png"
    assert first.headers["X-Tile-Source"] == "hot"
    assert first.headers["Access-Control-Allow-Origin"] == "*"

    clock.now = T + 0.75  # the same second: the same headers
    assert dict(get(path).headers) == dict(first.headers)
    revalidated = get(path, **{"If-None-Match": '"1"'})
    assert revalidated.status == 304 and revalidated.body is None
    assert dict(revalidated.headers) == {
        k: v for k, v in first.headers.items() if k != "Content-Type"
    }
    since = get(path, **{"If-Modified-Since": formatdate(T - 101, usegmt=True)})
    assert since.status == 304

    clock.now = T + 1.1  # the next second: Expires with it
    assert get(path).headers["Expires"] == formatdate(T + 3601, usegmt=True)

    tiles.tile = Tile(b"two", "hot", T + 1.0, '"2"')  # another tile, the same second
    second = get(path)
    assert (second.body, second.headers["ETag"]) == (b"two", '"2"')
    assert second.headers["Last-Modified"] == formatdate(T + 1, usegmt=True)
    assert get(path, **{"If-None-Match": '"1"'}).status == 200
    assert get(path, **{"If-Modified-Since": formatdate(T - 101, usegmt=True)}).status == 200

    tiles.tile = None  # not held any more: the application answers
    assert path.answer(make_mocked_request("GET", PREFIX + PATH)) is None


def test_stale_windows_get_their_cache_control_for_each_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    layer = single_layer(tmp_path, expires=100 / 3600, stale_while_revalidate=50)
    path, tiles = hot_path(layer)
    tiles.tile = Tile(b"one", "hot", T - 9.5, '"1"')
    assert get(path).headers["Cache-Control"].startswith("public, max-age=90,")
    clock.now = T + 0.75  # the same second: what is left of the tile's freshness
    assert get(path).headers["Cache-Control"].startswith("public, max-age=89,")


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", PREFIX + PATH),
        ("GET", PREFIX + "l/default/g/5/3/5.png"),  # not parsed by the application yet
        ("GET", "/wmts/1.0.0/WMTSCapabilities.xml"),
        ("GET", "/xyz/l/g/5/4/3.png"),
    ],
)
def test_anything_else_goes_to_the_application(tmp_path: Path, method: str, target: str) -> None:
    path, tiles = hot_path(single_layer(tmp_path))
    tiles.tile = Tile(b"one", "hot", T, '"1"')
    assert path.answer(make_mocked_request(method, target)) is None
    assert path.answer(make_mocked_request("GET", PREFIX + PATH)) is not None


def test_without_a_hot_tier_everything_goes_to_the_application(tmp_path: Path) -> None:
    path, tiles = hot_path(single_layer(tmp_path))
    tiles.tile = Tile(b"one", "hot", T, '"1"')
    tiles.hot = None  # hot_cache_mb: 0
    assert path.answer(make_mocked_request("GET", PREFIX + PATH)) is None


def test_a_tms_or_xyz_path_is_answered_once_parsed_and_only_without_a_query(
    tmp_path: Path,
) -> None:
    """XYZ reads a layer's dimensions from the query string: a remembered TMS, gmaps or
    XYZ path is answered by the hot path only without one (a WMTS REST path with one too)."""
    layer = single_layer(tmp_path)
    path, tiles = hot_path(layer)
    tiles.tile = Tile(b"one", "hot", T, '"1"')
    xyz = "/xyz/l/g/5/4/3.png"
    assert path.answer(make_mocked_request("GET", xyz)) is None  # not parsed yet
    faces = path._runtime.current.face_paths  # type: ignore[attr-defined]
    faces[xyz] = TileRequest(layer, "default", (), TileCoord(5, 3, 4))
    answered = path.answer(make_mocked_request("GET", xyz))
    assert answered is not None and answered.body == b"one"
    assert path.answer(make_mocked_request("HEAD", xyz)) is not None
    assert path.answer(make_mocked_request("GET", xyz + "?time=2020")) is None
    assert path.answer(make_mocked_request("GET", xyz + "?")) is None
    assert path.answer(make_mocked_request("GET", "/xyz/l/g/5/4/%33.png")) is None
    assert path.answer(make_mocked_request("GET", PREFIX + PATH + "?time=2020")) is not None
