"""Unit tests of tileserver.keys: the Memcached key layout."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tileserver.keys import MAX_KEY_BYTES, layer_key_part, metatile_lock_key, tile_key
from tileserver.types import TileCoord

# The alphabets config.py admits (its _NAME_RE for names, _VALUE_RE for dimension values).
NAME_CHARS = string.ascii_letters + string.digits + "_.-"
VALUE_CHARS = string.ascii_letters + string.digits + "_.:+-"

names = st.text(NAME_CHARS, min_size=1, max_size=60).filter(lambda s: s[0] not in ".-")
long_names = st.text(NAME_CHARS, min_size=1, max_size=300).filter(lambda s: s[0] not in ".-")
values = st.text(VALUE_CHARS, min_size=1, max_size=400)
prefixes = st.text(VALUE_CHARS + "/", min_size=0, max_size=100)
coords = st.builds(
    TileCoord, st.integers(0, 30), st.integers(0, 2**30 - 1), st.integers(0, 2**30 - 1)
)


def _part(layer: str, style: str, dims: tuple[str, ...], matrix_set: str) -> str:
    return layer_key_part(layer, style, dims, matrix_set)


@pytest.mark.parametrize(
    ("dims", "expected"),
    [
        ((), "tileserver/osm/default/epsg3857/17/47790/68240"),
        (("2021",), "tileserver/osm/default/2021/epsg3857/17/47790/68240"),
        (("2021", "high"), "tileserver/osm/default/2021/high/epsg3857/17/47790/68240"),
    ],
)
def test_tile_key_layout(dims: tuple[str, ...], expected: str) -> None:
    part = _part("osm", "default", dims, "epsg3857")
    assert tile_key("tileserver/", part, TileCoord(17, 47790, 68240)) == expected


def test_lock_key_layout() -> None:
    part = _part("osm", "default", (), "epsg3857")
    assert (
        metatile_lock_key("demo/", part, 17, 47784, 68232)
        == "demo/#lock/osm/default/epsg3857/17/47784/68232"
    )


def test_key_contains_every_part() -> None:
    key = tile_key("p/", _part("roads", "night", ("2019", "hd"), "swiss"), TileCoord(5, 6, 7))
    assert key.split("/") == ["p", "roads", "night", "2019", "hd", "swiss", "5", "6", "7"]


@st.composite
def key_inputs(draw: st.DrawFn) -> tuple[str, str, str, tuple[str, ...], str, TileCoord]:
    dims = tuple(draw(st.lists(st.text(VALUE_CHARS, min_size=1, max_size=12), max_size=3)))
    return (
        draw(st.text(VALUE_CHARS + "/", max_size=20)),
        draw(st.text(NAME_CHARS, min_size=1, max_size=12)),
        draw(st.text(NAME_CHARS, min_size=1, max_size=12)),
        dims,
        draw(st.text(NAME_CHARS, min_size=1, max_size=12)),
        draw(coords),
    )


def _tile_key(inputs: tuple[str, str, str, tuple[str, ...], str, TileCoord]) -> str:
    prefix, layer, style, dims, matrix_set, coord = inputs
    return tile_key(prefix, _part(layer, style, dims, matrix_set), coord)


@settings(max_examples=300)
@given(key_inputs(), st.data())
def test_keys_differ_when_any_part_differs(
    inputs: tuple[str, str, str, tuple[str, ...], str, TileCoord], data: st.DataObject
) -> None:
    coord = inputs[5]
    which = data.draw(st.sampled_from(["layer", "style", "dims", "matrix_set", "z", "row", "col"]))
    other = list(inputs)
    if which == "dims":
        new_dims = data.draw(
            st.lists(st.text(VALUE_CHARS, min_size=1, max_size=12), max_size=3).map(tuple)
        )
        other[3] = new_dims
    elif which in ("z", "row", "col"):
        field = {"z": 0, "row": 1, "col": 2}[which]
        parts = [coord.z, coord.row, coord.col]
        parts[field] = data.draw(st.integers(0, 2**30 - 1).filter(lambda v: v != parts[field]))
        other[5] = TileCoord(*parts)
    else:
        index = {"layer": 1, "style": 2, "matrix_set": 4}[which]
        other[index] = data.draw(st.text(NAME_CHARS, min_size=1, max_size=12))
    changed = tuple(other)
    if changed == inputs:
        return
    assert _tile_key(inputs) != _tile_key(changed)


@settings(max_examples=300)
@given(prefixes, long_names, long_names, st.lists(values, max_size=4), long_names, coords)
def test_keys_are_bounded_and_free_of_whitespace(
    prefix: str,
    layer: str,
    style: str,
    dims: list[str],
    matrix_set: str,
    coord: TileCoord,
) -> None:
    part = _part(layer, style, tuple(dims), matrix_set)
    keys = [
        tile_key(prefix, part, coord),
        metatile_lock_key(prefix, part, coord.z, coord.row, coord.col),
    ]
    for key in keys:
        assert len(key.encode()) <= MAX_KEY_BYTES
        assert key.startswith(prefix)
        # Memcached's text protocol forbids whitespace and control characters in keys.
        assert not any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in key)


def test_long_dimension_value_falls_back_to_a_digest() -> None:
    coord = TileCoord(3, 1, 2)
    short = tile_key("p/", _part("osm", "default", ("a" * 10,), "g"), coord)
    long_a = tile_key("p/", _part("osm", "default", ("a" * 300,), "g"), coord)
    long_b = tile_key("p/", _part("osm", "default", ("a" * 299 + "b",), "g"), coord)
    assert "a" * 10 in short
    assert long_a.startswith("p/#sha1/") and len(long_a) == len("p/#sha1/") + 40
    assert long_a != long_b
    assert long_a == tile_key("p/", _part("osm", "default", ("a" * 300,), "g"), coord)


def test_key_of_exactly_250_bytes_is_kept_and_251_is_digested() -> None:
    coord = TileCoord(1, 0, 0)
    base = len(tile_key("", _part("x", "s", (), "m"), coord))
    fits = "x" * (MAX_KEY_BYTES - base + 1)
    assert tile_key("", _part(fits, "s", (), "m"), coord) == f"{fits}/s/m/1/0/0"
    too_long = tile_key("", _part(fits + "x", "s", (), "m"), coord)
    assert too_long.startswith("#sha1/")


@settings(max_examples=300)
@given(key_inputs(), key_inputs())
def test_lock_keys_differ_from_tile_keys(
    a: tuple[str, str, str, tuple[str, ...], str, TileCoord],
    b: tuple[str, str, str, tuple[str, ...], str, TileCoord],
) -> None:
    prefix, layer, style, dims, matrix_set, coord = a
    _, layer_b, style_b, dims_b, matrix_set_b, coord_b = b
    lock = metatile_lock_key(
        prefix, _part(layer, style, dims, matrix_set), coord.z, coord.row, coord.col
    )
    assert lock != tile_key(prefix, _part(layer, style, dims, matrix_set), coord)
    assert lock != tile_key(prefix, _part(layer_b, style_b, dims_b, matrix_set_b), coord_b)


def test_lock_key_of_one_layer_is_not_the_tile_key_of_a_layer_named_lock() -> None:
    """Layer and style names are free (config only checks their characters), so a layer
    may be called 'lock'. Its tiles must not share keys with another layer's render locks:
    the lock value (b'1') would be served as a tile, and a cached tile would block the lock.
    """
    coord = TileCoord(17, 47784, 68232)
    # Layer 'lock' (style 'default', one dimension 'night') and layer 'default'
    # (style 'night', no dimension), both on grid 'epsg3857'.
    tile = tile_key("demo/", _part("lock", "default", ("night",), "epsg3857"), coord)
    lock = metatile_lock_key(
        "demo/", _part("default", "night", (), "epsg3857"), coord.z, coord.row, coord.col
    )
    assert tile != lock
