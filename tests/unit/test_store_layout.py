"""Unit tests of tileserver.store_layout: the WMTS REST path layout of tile stores."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tileserver.grid import format_resolution
from tileserver.store_layout import (
    TilePath,
    check_path,
    check_prefix,
    parse_tile_path,
    tile_path,
    tile_prefix,
)

# The alphabets config.py admits (its _NAME_RE for names, _VALUE_RE for dimension values).
NAME_CHARS = string.ascii_letters + string.digits + "_.-"
VALUE_CHARS = string.ascii_letters + string.digits + "_.:+-"


@pytest.mark.parametrize(
    ("folder", "dims", "matrix_id", "extension", "expected"),
    [
        ("", (), "17", "png", "1.0.0/osm/default/epsg3857/17/47790/68240.png"),
        ("tiles", (), "17", "png", "tiles/1.0.0/osm/default/epsg3857/17/47790/68240.png"),
        ("/a/b/", (), "17", "png", "a/b/1.0.0/osm/default/epsg3857/17/47790/68240.png"),
        ("", ("2021",), "17", "jpeg", "1.0.0/osm/default/2021/epsg3857/17/47790/68240.jpeg"),
        (
            "t",
            ("2021", "high"),
            "0.25",
            "png",
            "t/1.0.0/osm/default/2021/high/epsg3857/0.25/47790/68240.png",
        ),
    ],
)
def test_tile_path_layout(
    folder: str, dims: tuple[str, ...], matrix_id: str, extension: str, expected: str
) -> None:
    path = tile_path(folder, "osm", "default", dims, "epsg3857", matrix_id, 47790, 68240, extension)
    assert path == expected
    assert parse_tile_path(folder, path) == TilePath(
        "osm", "default", dims, "epsg3857", matrix_id, 47790, 68240, extension
    )


def test_prefixes_start_their_tiles() -> None:
    assert tile_prefix("", "osm", "default", (), "swiss") == "1.0.0/osm/default/swiss/"
    assert tile_prefix("f/", "osm", "s", ("2020",), "swiss", "4") == "f/1.0.0/osm/s/2020/swiss/4/"
    path = tile_path("f", "osm", "s", ("2020",), "swiss", "4", 1, 2, "png")
    assert path.startswith(tile_prefix("f", "osm", "s", ("2020",), "swiss", "4"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layer_name", ""),
        ("layer_name", "a/b"),
        ("style", ".."),
        ("dimension_values", ("..",)),  # '..' matches the dimension value pattern
        ("dimension_values", (".",)),
        ("dimension_values", ("",)),
        ("matrix_set", "a\\b"),
        ("matrix_id", ""),
        ("row", -1),
        ("col", -1),
        ("extension", ""),
        ("extension", "png/x"),
        ("extension", "p.ng"),
    ],
)
def test_tile_path_refuses_parts_that_would_change_the_layout(field: str, value: object) -> None:
    parts: dict[str, object] = {
        "folder": "",
        "layer_name": "osm",
        "style": "default",
        "dimension_values": (),
        "matrix_set": "g",
        "matrix_id": "3",
        "row": 1,
        "col": 2,
        "extension": "png",
        field: value,
    }
    with pytest.raises(ValueError):
        tile_path(**parts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path",
    [
        "",
        "1.0.0/osm/default/g/3/1/2",  # no extension
        "1.0.0/osm/default/g/3/1/.2.png",
        "1.0.0/osm/default/g/3/1/.2.png.a1b2c3d4e5f6.tmp",  # a write in progress
        "1.0.0/osm/default/g/3/1/2.png.tmp",
        "1.0.0/osm/default/g/3/01/2.png",  # not as tile_path writes it
        "1.0.0/osm/default/g/3/1/-2.png",
        "1.0.0/osm/default/g/3/1/².png",
        "1.0.0/osm/default/g/3/1/2.",
        "1.0.0/osm/default/g/3/1",
        "1.0.0/default/g/3/1/2.png",  # a part short
        "2.0.0/osm/default/g/3/1/2.png",
        "/1.0.0/osm/default/g/3/1/2.png",
        "1.0.0/osm//default/g/3/1/2.png",
        "1.0.0/osm/default/../g/3/1/2.png",
        "other/1.0.0/osm/default/g/3/1/2.png",  # under another folder
        "1.0.0/osm/default/g/3/1/2.png/",
    ],
)
def test_parse_refuses_what_tile_path_cannot_write(path: str) -> None:
    assert parse_tile_path("", path) is None


def test_parse_strips_the_folder_only() -> None:
    path = "tiles/1.0.0/osm/default/g/3/1/2.png"
    assert parse_tile_path("tiles", path) == TilePath("osm", "default", (), "g", "3", 1, 2, "png")
    assert parse_tile_path("tile", path) is None
    assert parse_tile_path("", path) is None


@pytest.mark.parametrize("path", ["a.png", "1.0.0/a/b/c.png", "..a/b..", ".hidden.tmp"])
def test_check_path_accepts_relative_paths(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize(
    "path", ["", "/a", "../a", "a/../../b", "a/./b", ".", "a//b", "a/", "a\\b", "a\0b"]
)
def test_check_path_refuses_paths_leaving_the_root(path: str) -> None:
    with pytest.raises(ValueError):
        check_path(path)


@pytest.mark.parametrize("prefix", ["", "1.0.0/", "1.0.0/os", "1.0.0/osm/default/g/3/1/2.png"])
def test_check_prefix_accepts_prefixes_inside_the_root(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/1.0.0/", "../", "a/../", "./", "a//", "a\\"])
def test_check_prefix_refuses_prefixes_leaving_the_root(prefix: str) -> None:
    with pytest.raises(ValueError):
        check_prefix(prefix)


names = st.text(NAME_CHARS, min_size=1, max_size=20).filter(lambda s: s[0] not in ".-")
values = st.text(VALUE_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
folders = st.lists(names, max_size=3).map("/".join)
matrix_ids = st.one_of(
    st.integers(0, 30).map(str),
    st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False).map(format_resolution),
)
tiles = st.builds(
    TilePath,
    layer_name=names,
    style=names,
    dimension_values=st.lists(values, max_size=3).map(tuple),
    matrix_set=names,
    matrix_id=matrix_ids,
    row=st.integers(0, 2**40),
    col=st.integers(0, 2**40),
    extension=st.sampled_from(["png", "jpeg", "jpg", "webp"]),
)


@given(folders, tiles)
def test_parse_inverts_tile_path(folder: str, tile: TilePath) -> None:
    path = tile_path(
        folder,
        tile.layer_name,
        tile.style,
        tile.dimension_values,
        tile.matrix_set,
        tile.matrix_id,
        tile.row,
        tile.col,
        tile.extension,
    )
    assert check_path(path) == path
    assert parse_tile_path(folder, path) == tile
    # A temporary file beside the tile (see FilesystemStore) is never read as a tile.
    directory, _, name = path.rpartition("/")
    assert parse_tile_path(folder, f"{directory}/.{name}.0123456789ab.tmp") is None
