"""CRS facts the grids and Capabilities need, read from pyproj's EPSG database.

pyproj is imported by the first function that needs it, not with this module: loading a
configuration whose grids are in the CRSs of `_WELL_KNOWN` needs no pyproj at all (its
import and its database's first query are about 40 ms of CPU, a tenth of
`generate_tiles`' start-up; benchmarks/RESULTS.md, issue 15, phase 7).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from tileserver.types import BBox

if TYPE_CHECKING:
    from pyproj import Transformer

_EARTH_RADIUS_M = 6378137.0
_METERS_PER_DEGREE = 2 * math.pi * _EARTH_RADIUS_M / 360


@dataclass(frozen=True, slots=True)
class CRSInfo:
    urn: str  # e.g. urn:ogc:def:crs:EPSG::3857
    meters_per_unit: float
    yx_axis_order: bool  # first axis is northing or latitude


def _epsg(code: int, meters_per_unit: float, yx_axis_order: bool) -> tuple[str, CRSInfo]:
    return f"EPSG:{code}", CRSInfo(f"urn:ogc:def:crs:EPSG::{code}", meters_per_unit, yx_axis_order)


# What pyproj says of the CRSs grids are most often in (the web's, WGS 84, and the national
# grids of TileCloud-chain's and MapCache's users), so that loading such a configuration
# needs no pyproj. A copy of the EPSG database's facts, checked against pyproj's for every
# entry by tests/unit/test_crs.py: pyproj stays the one source of truth.
_WELL_KNOWN: dict[str, CRSInfo] = dict(
    [
        _epsg(3857, 1.0, False),  # WGS 84 / Pseudo-Mercator
        _epsg(4326, _METERS_PER_DEGREE, True),  # WGS 84: latitude first
        _epsg(4258, _METERS_PER_DEGREE, True),  # ETRS89
        _epsg(2056, 1.0, False),  # CH1903+ / LV95
        _epsg(21781, 1.0, False),  # CH1903 / LV03
        _epsg(2154, 1.0, False),  # RGF93 v1 / Lambert-93
        _epsg(25832, 1.0, False),  # ETRS89 / UTM zone 32N
        _epsg(25833, 1.0, False),  # ETRS89 / UTM zone 33N
        _epsg(3035, 1.0, True),  # ETRS89-extended / LAEA Europe: northing first
        _epsg(28992, 1.0, False),  # Amersfoort / RD New
        _epsg(31370, 1.0, False),  # Belge 1972 / Belgian Lambert 72
        _epsg(27700, 1.0, False),  # OSGB36 / British National Grid
    ]
)
_EPSG_CODE = re.compile(r"EPSG:[0-9]+", re.IGNORECASE)


def crs_info(srs: str) -> CRSInfo:
    """Facts about an 'EPSG:nnnn' code; ValueError with pyproj's reason when unknown."""
    if _EPSG_CODE.fullmatch(srs):
        known = _WELL_KNOWN.get(srs.upper())
        if known is not None:
            return known
    return crs_info_from_pyproj(srs)


@lru_cache(maxsize=64)
def crs_info_from_pyproj(srs: str) -> CRSInfo:
    """`crs_info` as pyproj's database gives it, whatever the CRS."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(srs)
    except CRSError as exc:
        raise ValueError(str(exc)) from exc
    axes = crs.axis_info
    if not axes:
        raise ValueError(f"{srs} has no axes")
    unit = axes[0].unit_name.lower()
    if unit in {"degree", "degrees"}:
        meters_per_unit = _METERS_PER_DEGREE
    else:
        meters_per_unit = axes[0].unit_conversion_factor
    direction = axes[0].direction.lower()
    auth = crs.to_authority()
    urn = f"urn:ogc:def:crs:{auth[0]}::{auth[1]}" if auth else srs
    return CRSInfo(
        urn=urn, meters_per_unit=meters_per_unit, yx_axis_order=direction in {"north", "south"}
    )


@lru_cache(maxsize=64)
def _to_wgs84(srs: str) -> Transformer:
    from pyproj import Transformer

    return Transformer.from_crs(srs, "EPSG:4326", always_xy=True)


def bbox_to_wgs84(bbox: BBox, srs: str) -> BBox:
    """The lon/lat box around bbox, densified so curved edges are covered."""
    minx, miny, maxx, maxy = _to_wgs84(srs).transform_bounds(*bbox.as_tuple(), densify_pts=21)
    return BBox(max(minx, -180.0), max(miny, -90.0), min(maxx, 180.0), min(maxy, 90.0))


@lru_cache(maxsize=64)
def transformer(source: str, target: str) -> Transformer:
    """x/y (easting/longitude first, whatever the CRS's axis order) from source to target."""
    from pyproj import Transformer

    return Transformer.from_crs(source, target, always_xy=True)


def transform_bbox(bbox: BBox, source: str, target: str) -> BBox:
    """The box in `target` around bbox (in `source`), densified so curved edges are
    covered; ValueError where bbox has no image in target (outside its area of use)."""
    if source == target:
        return bbox
    bounds = transformer(source, target).transform_bounds(*bbox.as_tuple(), densify_pts=21)
    if not all(math.isfinite(v) for v in bounds) or not (
        bounds[0] < bounds[2] and bounds[1] < bounds[3]
    ):
        raise ValueError(f"{list(bbox.as_tuple())} ({source}) has no extent in {target}")
    return BBox(*bounds)


@dataclass(frozen=True, slots=True)
class SrsDefinition:
    """A CRS as GeoPackage's `gpkg_spatial_ref_sys` records it."""

    name: str
    organization: str  # "EPSG"
    code: int  # the organisation's code, also the GeoPackage srs_id
    wkt: str  # OGC WKT 1 (GeoPackage 1.3, 12-128r18, table 21)


@lru_cache(maxsize=64)
def srs_definition(srs: str) -> SrsDefinition:
    """The definition of an 'EPSG:nnnn' code; ValueError when pyproj knows no such CRS."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(srs)
    except CRSError as exc:
        raise ValueError(str(exc)) from exc
    authority = crs.to_authority(min_confidence=90)
    if authority is None or not authority[1].isdigit():
        raise ValueError(f"{srs} has no numeric authority code")
    wkt = crs.to_wkt("WKT1_GDAL") or crs.to_wkt()
    return SrsDefinition(crs.name, authority[0], int(authority[1]), wkt)
