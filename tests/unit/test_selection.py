from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shapely import Point, Polygon

from tests.support.configs import single_layer
from tileserver.crs import crs_info
from tileserver.errors import InvalidSelection, PlanningError
from tileserver.grid import Grid
from tileserver.selection import (
    MetatileRef,
    metatile_bbox,
    metatile_ref,
    metatiles_in_bbox,
    metatiles_in_geometry,
    named_layers,
    parse_zooms,
    read_tile_list,
    seeded_zooms,
)
from tileserver.types import BBox, TileCoord

MERC = 20037508.342789244
INFO = crs_info("EPSG:3857")
GRID = Grid(
    name="g",
    srs="EPSG:3857",
    bbox=BBox(-MERC, -MERC, MERC, MERC),
    resolutions=tuple(156543.03392804097 / 2**z for z in range(21)),
    crs_urn=INFO.urn,
)
MONACO = BBox(824000, 5421800, 829500, 5428000)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("5", (5,)),
        ("2-4", (2, 3, 4)),
        ("2,4,7", (2, 4, 7)),
        (" 9 , 2-3 ", (2, 3, 9)),
        ("3-3", (3,)),
    ],
)
def test_parse_zooms(spec: str, expected: tuple[int, ...]) -> None:
    assert parse_zooms(spec, 21) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "invalid zoom"), ("a", "invalid zoom"), ("5-2", "5 > 2"), ("21", "levels 0 to 20"),
     ("1,,2", "invalid zoom"), ("-3", "invalid zoom")],
)  # fmt: skip
def test_parse_zooms_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_zooms(spec, 21)


def test_tile_list_is_z_x_y_with_comments() -> None:
    lines = ["# expired", "17/68240/47790", "", "18/136480/95580  # trailing"]
    assert read_tile_list(lines) == [TileCoord(17, 47790, 68240), TileCoord(18, 95580, 136480)]
    with pytest.raises(ValueError, match="line 2: invalid tile"):
        read_tile_list(["1/2/3", "1/2"])


def test_metatiles_of_monaco_cover_exactly_its_tiles() -> None:
    for z in range(10, 19):
        limits = GRID.limits(z, MONACO)
        refs = list(metatiles_in_bbox(GRID, z, MONACO, 8))
        assert len(set(refs)) == len(refs)
        covered = {
            (r, c)
            for ref in refs
            for r in range(ref.row, ref.row + 8)
            for c in range(ref.col, ref.col + 8)
        }
        wanted = {
            (r, c)
            for r in range(limits.min_row, limits.max_row + 1)
            for c in range(limits.min_col, limits.max_col + 1)
        }
        assert wanted <= covered
        # No metatile is useless: each holds at least one wanted tile.
        for ref in refs:
            assert any((r, c) in wanted for r in range(ref.row, ref.row + 8)
                       for c in range(ref.col, ref.col + 8))  # fmt: skip


@given(
    z=st.integers(0, 20),
    row=st.integers(0, 2**20 - 1),
    col=st.integers(0, 2**20 - 1),
    meta=st.sampled_from([1, 2, 4, 5, 8, 16]),
)
def test_metatile_ref_holds_the_tile(z: int, row: int, col: int, meta: int) -> None:
    row, col = row % 2**z, col % 2**z
    ref = metatile_ref(TileCoord(z, row, col), meta)
    assert ref.row <= row < ref.row + meta and ref.col <= col < ref.col + meta
    assert ref.row % meta == 0 and ref.col % meta == 0
    box = metatile_bbox(GRID, ref, meta)
    tile = GRID.tile_bbox(TileCoord(z, row, col))
    assert box.minx <= tile.minx + 1e-6 and tile.maxx <= box.maxx + 1e-6
    assert box.miny <= tile.miny + 1e-6 and tile.maxy <= box.maxy + 1e-6


def test_geometry_limits_metatiles_to_those_it_touches() -> None:
    z = 18
    everything = list(metatiles_in_bbox(GRID, z, MONACO, 8))
    point = Point(826500, 5425000)
    touched = list(metatiles_in_geometry(GRID, z, point, 8))
    assert len(touched) == 1
    assert touched[0] in everything
    assert (
        metatile_bbox(GRID, touched[0], 8).minx <= 826500 <= metatile_bbox(GRID, touched[0], 8).maxx
    )
    # A thin diagonal strip touches far fewer metatiles than its bounding box holds.
    strip = Polygon([(824000, 5421800), (824100, 5421800), (829500, 5428000),
                     (829400, 5428000)])  # fmt: skip
    diagonal = list(metatiles_in_geometry(GRID, z, strip, 8))
    boxed = list(metatiles_in_bbox(GRID, z, BBox(*strip.bounds), 8))
    assert 0 < len(diagonal) < len(boxed) / 2
    # Clipped by a bbox that misses it: nothing.
    assert list(metatiles_in_geometry(GRID, z, strip, 8, BBox(0, 0, 10, 10))) == []


def test_metatile_ref_orders_and_prints() -> None:
    assert str(MetatileRef(17, 47784, 68240)) == "17/47784/68240"
    assert sorted([MetatileRef(2, 0, 0), MetatileRef(1, 4, 4)])[0].z == 1


@pytest.mark.parametrize(
    ("seed", "expected"),
    [(156543.03392804097, (0,)), (19.1, tuple(range(14))), (0.1, tuple(range(20)))],
)
def test_seeded_zooms_are_the_levels_at_least_as_coarse_as_the_seed(
    tmp_path: Path, seed: float, expected: tuple[int, ...]
) -> None:
    layer = single_layer(tmp_path, min_resolution_seed=seed)
    assert seeded_zooms(layer, "generate") == expected


def test_seeded_zooms_name_what_is_missing_and_what_the_command_was_doing(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"^no level to estimate for layer 'l': pass --zoom"):
        seeded_zooms(single_layer(tmp_path), "estimate")
    coarse = single_layer(tmp_path, levels=3, min_resolution_seed=200000.0)
    with pytest.raises(ValueError, match=r"seed 200000 is coarser than every level of grid .g."):
        seeded_zooms(coarse, "generate")


def test_named_layers_are_those_of_layer_else_the_defaults_each_once_in_order(
    tmp_path: Path,
) -> None:
    a, b = single_layer(tmp_path, name="a"), single_layer(tmp_path, name="b")
    layers = {"a": a, "b": b}
    assert named_layers(layers, ["b", "a", "b"], ["a"], "generate") == [b, a]
    assert named_layers(layers, [], ["b"], "generate") == [b]


def test_named_layers_name_what_is_missing_and_what_is_unknown(tmp_path: Path) -> None:
    layers = {"a": single_layer(tmp_path, name="a")}
    with pytest.raises(PlanningError, match=r"^no layer to estimate: pass --layer .*\(layers: a\)"):
        named_layers(layers, [], [], "estimate")
    with pytest.raises(InvalidSelection, match=r"^--layer: unknown layer 'z' \(defined: a\)$"):
        named_layers(layers, ["a", "z"], [], "generate")
