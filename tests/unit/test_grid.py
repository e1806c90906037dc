"""Unit tests of tileserver.grid: matrix sizes, scale denominators, tile bboxes, limits,
identifiers and metatile geometry, checked against OGC WMTS 1.0.0 (07-057r7) Annex E and
against the slippy-map tile formula.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from tileserver.config import parse_config
from tileserver.crs import crs_info
from tileserver.grid import PIXEL_SIZE_M, Grid, Metatile, format_resolution, metatile_for
from tileserver.types import BBox, Limits, TileCoord

WEB_MERCATOR_HALF = 20037508.342789244
WEB_MERCATOR_Z0 = 156543.03392804097
SWISS_RESOLUTIONS = (
    4000, 3750, 3500, 3250, 3000, 2750, 2500, 2250, 2000, 1750, 1500, 1250, 1000, 750,
    650, 500, 250, 100, 50, 20, 10, 5, 2.5, 2, 1.5, 1, 0.5, 0.25,
)  # fmt: skip
SWISS_BBOX = BBox(2420000, 1030000, 2900000, 1350000)
MONACO = BBox(824000, 5421800, 829500, 5428000)


def make_grid(
    name: str,
    srs: str,
    bbox: BBox,
    resolutions: tuple[float, ...],
    matrix_identifier: str = "zoom",
) -> Grid:
    info = crs_info(srs)
    return Grid(
        name=name,
        srs=srs,
        bbox=bbox,
        resolutions=tuple(float(r) for r in resolutions),
        matrix_identifier=matrix_identifier,
        meters_per_unit=info.meters_per_unit,
        yx_axis_order=info.yx_axis_order,
        crs_urn=info.urn,
    )


MERCATOR = make_grid(
    "epsg3857",
    "EPSG:3857",
    BBox(-WEB_MERCATOR_HALF, -WEB_MERCATOR_HALF, WEB_MERCATOR_HALF, WEB_MERCATOR_HALF),
    tuple(WEB_MERCATOR_Z0 / 2**z for z in range(21)),
)
SWISS = make_grid("epsg2056", "EPSG:2056", SWISS_BBOX, SWISS_RESOLUTIONS, "resolution")
# GoogleCRS84Quad (07-057r7, Annex E.3): 1.40625 degrees per pixel at level 0.
CRS84_QUAD = make_grid(
    "epsg4326", "EPSG:4326", BBox(-180, -90, 180, 90), tuple(1.40625 / 2**z for z in range(19))
)


# --- EPSG:3857 GoogleMapsCompatible ---------------------------------------------------------


def spec_google_scale(z: int) -> float:
    """07-057r7 Annex E.4: equatorial circumference / 256 px / 2**z, over a 0.28 mm pixel."""
    return 2 * math.pi * 6378137 / 256 / 2**z / 0.00028


@pytest.mark.parametrize("z", range(21))
def test_mercator_scale_denominator_follows_the_spec_formula(z: int) -> None:
    assert MERCATOR.scale_denominator(z) == pytest.approx(spec_google_scale(z), rel=1e-12)


# Values as printed in the table of 07-057r7 Annex E.4 (GoogleMapsCompatible).
@pytest.mark.parametrize(
    ("z", "published"),
    [
        (0, 559082264.0287178),
        (1, 279541132.0143589),
        (2, 139770566.0071794),
        (10, 545978.7734655447),
        (18, 2132.729583849784),
    ],
)
def test_mercator_scale_denominator_matches_published_values(z: int, published: float) -> None:
    assert MERCATOR.scale_denominator(z) == pytest.approx(published, rel=1e-12)


def test_mercator_crs_facts() -> None:
    assert MERCATOR.meters_per_unit == 1.0
    assert MERCATOR.yx_axis_order is False
    assert MERCATOR.crs_urn == "urn:ogc:def:crs:EPSG::3857"
    assert MERCATOR.top_left_corner() == (-WEB_MERCATOR_HALF, WEB_MERCATOR_HALF)


@pytest.mark.parametrize("z", range(21))
def test_mercator_matrix_size_is_2_to_the_z(z: int) -> None:
    assert MERCATOR.matrix_size(z) == (2**z, 2**z)
    assert MERCATOR.limits(z) == Limits(0, 2**z - 1, 0, 2**z - 1)


H = WEB_MERCATOR_HALF


@pytest.mark.parametrize(
    ("coord", "expected"),
    [
        (TileCoord(0, 0, 0), (-H, -H, H, H)),
        (TileCoord(1, 0, 0), (-H, 0, 0, H)),
        (TileCoord(1, 0, 1), (0, 0, H, H)),
        (TileCoord(1, 1, 0), (-H, -H, 0, 0)),
        (TileCoord(1, 1, 1), (0, -H, H, 0)),
        (TileCoord(2, 1, 2), (0, 0, H / 2, H / 2)),
        (TileCoord(2, 3, 3), (H / 2, -H, H, -H / 2)),
    ],
)
def test_mercator_tile_bbox(coord: TileCoord, expected: tuple[float, ...]) -> None:
    bbox = MERCATOR.tile_bbox(coord)
    assert bbox.as_tuple() == pytest.approx(expected, abs=1e-6)


def test_mercator_tile_bbox_z1_matches_published_coordinates() -> None:
    assert MERCATOR.tile_bbox(TileCoord(1, 0, 0)).as_tuple() == pytest.approx(
        (-20037508.34, 0, 0, 20037508.34), abs=0.01
    )


@pytest.mark.parametrize(
    ("coord", "inside"),
    [
        (TileCoord(0, 0, 0), True),
        (TileCoord(20, 2**20 - 1, 2**20 - 1), True),
        (TileCoord(3, 8, 0), False),
        (TileCoord(3, 0, 8), False),
        (TileCoord(3, -1, 0), False),
        (TileCoord(3, 0, -1), False),
        (TileCoord(21, 0, 0), False),
        (TileCoord(-1, 0, 0), False),
    ],
)
def test_mercator_contains(coord: TileCoord, inside: bool) -> None:
    assert MERCATOR.contains(coord) is inside


def test_mercator_limits_of_monaco_at_z17() -> None:
    assert MERCATOR.limits(17, MONACO) == Limits(
        min_row=47782, max_row=47803, min_col=68231, max_col=68249
    )


def slippy_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(row, col) of the OpenStreetMap tile holding lon/lat, by the usual XYZ formula."""
    n = 2**z
    col = math.floor((lon + 180.0) / 360.0 * n)
    row = math.floor((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return row, col


@pytest.mark.parametrize("z", [0, 5, 12, 15, 17, 19])
def test_mercator_limits_agree_with_the_slippy_map_formula(z: int) -> None:
    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    west, south = to_lonlat.transform(MONACO.minx, MONACO.miny)
    east, north = to_lonlat.transform(MONACO.maxx, MONACO.maxy)
    top, left = slippy_tile(west, north, z)
    bottom, right = slippy_tile(east, south, z)
    assert MERCATOR.limits(z, MONACO) == Limits(top, bottom, left, right)


def test_limits_of_a_bbox_on_tile_edges_do_not_take_the_neighbours() -> None:
    # Exactly the four tiles (z2, rows 1-2, cols 1-2) around the origin.
    assert MERCATOR.limits(2, BBox(-H / 2, -H / 2, H / 2, H / 2)) == Limits(1, 2, 1, 2)
    assert MERCATOR.limits(1, BBox(-H, 0, 0, H)) == Limits(0, 0, 0, 0)


def test_limits_are_clamped_to_the_matrix() -> None:
    wider = BBox(-2 * H, -2 * H, 2 * H, 2 * H)
    assert MERCATOR.limits(3, wider) == Limits(0, 7, 0, 7)


# --- EPSG:4326: the axis order of the TopLeftCorner -----------------------------------------


def test_epsg4326_top_left_corner_is_in_lat_lon_order() -> None:
    assert CRS84_QUAD.yx_axis_order is True
    assert CRS84_QUAD.top_left_corner() == (90.0, -180.0)


def test_epsg4326_scale_denominator_matches_google_crs84_quad() -> None:
    # 07-057r7 Annex E.3, GoogleCRS84Quad level 0 and level 1.
    assert CRS84_QUAD.scale_denominator(0) == pytest.approx(559082264.0287178, rel=1e-9)
    assert CRS84_QUAD.scale_denominator(1) == pytest.approx(279541132.0143589, rel=1e-9)


def test_epsg4326_matrix_sizes() -> None:
    assert CRS84_QUAD.matrix_size(0) == (1, 1)
    assert CRS84_QUAD.matrix_size(1) == (2, 1)
    assert CRS84_QUAD.matrix_size(2) == (4, 2)


# --- EPSG:2056 custom grid -----------------------------------------------------------------


@pytest.mark.parametrize("z", range(len(SWISS_RESOLUTIONS)))
def test_swiss_matrix_size_covers_the_bbox(z: int) -> None:
    span = SWISS_RESOLUTIONS[z] * 256
    expected = (math.ceil(480000 / span), math.ceil(320000 / span))
    assert SWISS.matrix_size(z) == expected


@pytest.mark.parametrize(
    ("resolution", "size"),
    [(4000, (1, 1)), (1000, (2, 2)), (250, (8, 5)), (100, (19, 13)), (2, (938, 625))],
)
def test_swiss_matrix_size_literal_values(resolution: float, size: tuple[int, int]) -> None:
    assert SWISS.matrix_size(SWISS_RESOLUTIONS.index(resolution)) == size


@pytest.mark.parametrize("z", range(len(SWISS_RESOLUTIONS)))
def test_swiss_scale_denominator(z: int) -> None:
    assert SWISS.scale_denominator(z) == pytest.approx(SWISS_RESOLUTIONS[z] / 0.00028, rel=1e-12)
    assert PIXEL_SIZE_M == 0.00028


def test_swiss_crs_facts() -> None:
    assert SWISS.crs_urn == "urn:ogc:def:crs:EPSG::2056"
    assert SWISS.yx_axis_order is False  # EPSG:2056 lists easting first
    assert SWISS.top_left_corner() == (2420000.0, 1350000.0)


@pytest.mark.parametrize(
    ("resolution", "identifier"),
    [(4000, "4000"), (650, "650"), (2.5, "2_5"), (1, "1"), (0.5, "0_5"), (0.25, "0_25")],
)
def test_swiss_resolution_identifiers(resolution: float, identifier: str) -> None:
    """TileCloud-chain's identifiers (its store paths and its users' URLs use them); the
    '2.5' spelling tileserver used before is still understood."""
    z = SWISS_RESOLUTIONS.index(resolution)
    assert SWISS.matrix_id(z) == identifier
    assert SWISS.zoom_of(identifier) == z
    assert SWISS.zoom_of(identifier.replace("_", ".")) == z


def test_swiss_identifiers_round_trip_for_every_level() -> None:
    ids = [SWISS.matrix_id(z) for z in range(len(SWISS_RESOLUTIONS))]
    assert len(set(ids)) == len(ids)
    assert [SWISS.zoom_of(i) for i in ids] == list(range(len(SWISS_RESOLUTIONS)))


@pytest.mark.parametrize("identifier", ["4000.0", "0", "27", "0.250", "", " 1", "1e3"])
def test_swiss_unknown_identifiers(identifier: str) -> None:
    assert SWISS.zoom_of(identifier) is None


def test_zoom_identifiers_round_trip() -> None:
    assert [MERCATOR.matrix_id(z) for z in (0, 9, 20)] == ["0", "9", "20"]
    assert [MERCATOR.zoom_of(i) for i in ("0", "9", "20")] == [0, 9, 20]
    for unknown in ("21", "-1", "00", "01", "1.0", "GoogleMapsCompatible:1"):
        assert MERCATOR.zoom_of(unknown) is None


@pytest.mark.parametrize(
    ("resolution", "text"),
    [(1.0, "1"), (2.5, "2.5"), (156543.03392804097, "156543.03392804097"), (0.1, "0.1")],
)
def test_format_resolution(resolution: float, text: str) -> None:
    assert format_resolution(resolution) == text


def test_parse_config_builds_the_same_grids(tmp_path: Path) -> None:
    config = parse_config(
        {
            "grids": {
                "epsg3857": {
                    "srs": "EPSG:3857",
                    "bbox": list(MERCATOR.bbox.as_tuple()),
                    "resolutions": list(MERCATOR.resolutions),
                },
                "epsg2056": {
                    "srs": "EPSG:2056",
                    "bbox": list(SWISS_BBOX.as_tuple()),
                    "resolutions": list(SWISS_RESOLUTIONS),
                    "matrix_identifier": "resolution",
                },
            },
            "layers": {"dummy": {"grid": "epsg3857", "type": "mapnik", "mapfile": __file__}},
        },
        base_dir=tmp_path,
    )
    assert config.grids["epsg3857"] == MERCATOR
    assert config.grids["epsg2056"] == SWISS


# --- metatiles -----------------------------------------------------------------------------


def _extended(bbox: BBox, res: float, left: int, bottom: int, right: int, top: int) -> BBox:
    return BBox(
        bbox.minx - left * res,
        bbox.miny - bottom * res,
        bbox.maxx + right * res,
        bbox.maxy + top * res,
    )


def _block_bbox(grid: Grid, z: int, row0: int, col0: int, rows: int, cols: int) -> BBox:
    top_left = grid.tile_bbox(TileCoord(z, row0, col0))
    bottom_right = grid.tile_bbox(TileCoord(z, row0 + rows - 1, col0 + cols - 1))
    return BBox(top_left.minx, bottom_right.miny, bottom_right.maxx, top_left.maxy)


def test_metatile_in_the_middle_has_a_buffer_on_all_sides() -> None:
    z, res = 10, MERCATOR.resolutions[10]
    mt = metatile_for(MERCATOR, TileCoord(z, 101, 203), meta_size=8, meta_buffer=32)
    assert (mt.z, mt.row, mt.col, mt.rows, mt.cols) == (10, 96, 200, 8, 8)
    assert len(mt.tiles) == 64
    assert (mt.width, mt.height) == (8 * 256 + 64, 8 * 256 + 64)
    expected = _extended(_block_bbox(MERCATOR, z, 96, 200, 8, 8), res, 32, 32, 32, 32)
    assert mt.bbox.as_tuple() == pytest.approx(expected.as_tuple(), abs=1e-6)
    offsets = {(t.coord.row, t.coord.col): (t.x, t.y) for t in mt.tiles}
    assert offsets[(96, 200)] == (32, 32)
    assert offsets[(101, 203)] == (32 + 3 * 256, 32 + 5 * 256)
    assert offsets[(103, 207)] == (32 + 7 * 256, 32 + 7 * 256)


@pytest.mark.parametrize(
    ("coord", "block", "buffers"),
    [
        # coord, (row0, col0, rows, cols), buffers (left, bottom, right, top)
        (TileCoord(4, 0, 0), (0, 0, 8, 8), (0, 32, 32, 0)),
        (TileCoord(4, 15, 15), (8, 8, 8, 8), (32, 0, 0, 32)),
        (TileCoord(4, 3, 12), (0, 8, 8, 8), (32, 32, 0, 0)),
        (TileCoord(4, 12, 3), (8, 0, 8, 8), (0, 0, 32, 32)),
        (TileCoord(5, 0, 13), (0, 8, 8, 8), (32, 32, 32, 0)),
        (TileCoord(5, 31, 13), (24, 8, 8, 8), (32, 0, 32, 32)),
        # the whole matrix is smaller than a metatile: no buffer anywhere
        (TileCoord(2, 1, 2), (0, 0, 4, 4), (0, 0, 0, 0)),
        (TileCoord(0, 0, 0), (0, 0, 1, 1), (0, 0, 0, 0)),
    ],
)
def test_metatile_at_the_mercator_edge_drops_the_buffer_there(
    coord: TileCoord, block: tuple[int, int, int, int], buffers: tuple[int, int, int, int]
) -> None:
    row0, col0, rows, cols = block
    left, bottom, right, top = buffers
    res = MERCATOR.resolutions[coord.z]
    mt = metatile_for(MERCATOR, coord, meta_size=8, meta_buffer=32)
    assert (mt.row, mt.col, mt.rows, mt.cols) == block
    assert len(mt.tiles) == rows * cols
    assert mt.width == cols * 256 + left + right
    assert mt.height == rows * 256 + top + bottom
    expected = _extended(_block_bbox(MERCATOR, coord.z, row0, col0, rows, cols), res, *buffers)
    assert mt.bbox.as_tuple() == pytest.approx(expected.as_tuple(), abs=1e-6)
    assert mt.bbox.minx >= MERCATOR.bbox.minx - 1e-6
    assert mt.bbox.maxy <= MERCATOR.bbox.maxy + 1e-6


def test_metatile_clipped_at_a_swiss_matrix_edge_that_is_not_a_multiple_of_meta_size() -> None:
    z = SWISS_RESOLUTIONS.index(100)  # 19 x 13 tiles
    mt = metatile_for(SWISS, TileCoord(z, 12, 18), meta_size=8, meta_buffer=16)
    assert (mt.row, mt.col, mt.rows, mt.cols) == (8, 16, 5, 3)
    assert len(mt.tiles) == 15
    assert (mt.width, mt.height) == (3 * 256 + 16, 5 * 256 + 16)
    expected = _extended(_block_bbox(SWISS, z, 8, 16, 5, 3), 100, 16, 0, 0, 16)
    assert mt.bbox.as_tuple() == pytest.approx(expected.as_tuple(), abs=1e-6)


def test_meta_size_one_is_a_single_tile_with_its_buffer() -> None:
    res = MERCATOR.resolutions[6]
    coord = TileCoord(6, 20, 30)
    mt = metatile_for(MERCATOR, coord, meta_size=1, meta_buffer=10)
    assert [t.coord for t in mt.tiles] == [coord]
    assert (mt.tiles[0].x, mt.tiles[0].y) == (10, 10)
    assert (mt.width, mt.height) == (276, 276)
    expected = _extended(MERCATOR.tile_bbox(coord), res, 10, 10, 10, 10)
    assert mt.bbox.as_tuple() == pytest.approx(expected.as_tuple(), abs=1e-6)


@st.composite
def metatile_cases(draw: st.DrawFn) -> tuple[Grid, TileCoord, int, int]:
    grid = draw(st.sampled_from([MERCATOR, SWISS, CRS84_QUAD]))
    z = draw(st.integers(0, len(grid.resolutions) - 1))
    width, height = grid.matrix_size(z)
    # Bias towards the edges, where the clipping happens.
    row = draw(st.one_of(st.integers(0, height - 1), st.sampled_from([0, height - 1])))
    col = draw(st.one_of(st.integers(0, width - 1), st.sampled_from([0, width - 1])))
    meta_size = draw(st.integers(1, 8))
    meta_buffer = draw(st.integers(0, 256))
    return grid, TileCoord(z, row, col), meta_size, meta_buffer


def _close_px(a: float, b: float, res: float) -> bool:
    """a and b (CRS units) agree to a millionth of a pixel."""
    return abs(a - b) <= 1e-6 * res + 1e-9 * max(abs(a), abs(b))


@settings(max_examples=150, deadline=None)
@given(metatile_cases())
def test_every_cut_tile_lies_exactly_where_its_bbox_is(
    case: tuple[Grid, TileCoord, int, int],
) -> None:
    grid, coord, meta_size, meta_buffer = case
    res = grid.resolutions[coord.z]
    ts = grid.tile_size
    mt = metatile_for(grid, coord, meta_size, meta_buffer)

    assert coord in [t.coord for t in mt.tiles]
    assert len(mt.tiles) == mt.rows * mt.cols == len({t.coord for t in mt.tiles})
    assert 1 <= mt.rows <= meta_size and 1 <= mt.cols <= meta_size
    assert mt.row % meta_size == 0 and mt.col % meta_size == 0
    # The image covers the bbox at the level's resolution.
    assert _close_px(mt.bbox.maxx - mt.bbox.minx, mt.width * res, res)
    assert _close_px(mt.bbox.maxy - mt.bbox.miny, mt.height * res, res)
    assert mt.width <= meta_size * ts + 2 * meta_buffer
    assert mt.height <= meta_size * ts + 2 * meta_buffer

    for cut in mt.tiles:
        assert grid.contains(cut.coord)
        tile = grid.tile_bbox(cut.coord)
        assert _close_px(mt.bbox.minx + cut.x * res, tile.minx, res)
        assert _close_px(mt.bbox.maxy - cut.y * res, tile.maxy, res)
        assert _close_px(mt.bbox.minx + (cut.x + ts) * res, tile.maxx, res)
        assert _close_px(mt.bbox.maxy - (cut.y + ts) * res, tile.miny, res)
        assert cut.x >= 0 and cut.x + ts <= mt.width
        assert cut.y >= 0 and cut.y + ts <= mt.height


@settings(max_examples=60, deadline=None)
@given(metatile_cases())
def test_every_tile_of_a_metatile_maps_to_the_same_metatile(
    case: tuple[Grid, TileCoord, int, int],
) -> None:
    grid, coord, meta_size, meta_buffer = case
    mt = metatile_for(grid, coord, meta_size, meta_buffer)
    for cut in mt.tiles:
        assert metatile_for(grid, cut.coord, meta_size, meta_buffer) == mt


@settings(max_examples=100, deadline=None)
@given(metatile_cases())
def test_buffer_is_present_exactly_on_the_inner_sides(
    case: tuple[Grid, TileCoord, int, int],
) -> None:
    grid, coord, meta_size, meta_buffer = case
    mt: Metatile = metatile_for(grid, coord, meta_size, meta_buffer)
    width, height = grid.matrix_size(coord.z)
    left = meta_buffer if mt.col > 0 else 0
    top = meta_buffer if mt.row > 0 else 0
    right = meta_buffer if mt.col + mt.cols < width else 0
    bottom = meta_buffer if mt.row + mt.rows < height else 0
    assert mt.rows == min(meta_size, height - mt.row)
    assert mt.cols == min(meta_size, width - mt.col)
    assert mt.width == mt.cols * grid.tile_size + left + right
    assert mt.height == mt.rows * grid.tile_size + top + bottom
    first = min(mt.tiles, key=lambda t: (t.coord.row, t.coord.col))
    assert (first.coord.row, first.coord.col) == (mt.row, mt.col)
    assert (first.x, first.y) == (left, top)
