"""CRS facts the grids and Capabilities need, read from pyproj's EPSG database."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from tileserver.types import BBox

_EARTH_RADIUS_M = 6378137.0


@dataclass(frozen=True, slots=True)
class CRSInfo:
    urn: str  # e.g. urn:ogc:def:crs:EPSG::3857
    meters_per_unit: float
    yx_axis_order: bool  # first axis is northing or latitude


@lru_cache(maxsize=64)
def crs_info(srs: str) -> CRSInfo:
    """Facts about an 'EPSG:nnnn' code; ValueError with pyproj's reason when unknown."""
    try:
        crs = CRS.from_user_input(srs)
    except CRSError as exc:
        raise ValueError(str(exc)) from exc
    axes = crs.axis_info
    if not axes:
        raise ValueError(f"{srs} has no axes")
    unit = axes[0].unit_name.lower()
    if unit in {"degree", "degrees"}:
        meters_per_unit = 2 * math.pi * _EARTH_RADIUS_M / 360
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
    return Transformer.from_crs(srs, "EPSG:4326", always_xy=True)


def bbox_to_wgs84(bbox: BBox, srs: str) -> BBox:
    """The lon/lat box around bbox, densified so curved edges are covered."""
    minx, miny, maxx, maxy = _to_wgs84(srs).transform_bounds(*bbox.as_tuple(), densify_pts=21)
    return BBox(max(minx, -180.0), max(miny, -90.0), min(maxx, 180.0), min(maxy, 90.0))


@lru_cache(maxsize=64)
def transformer(source: str, target: str) -> Transformer:
    """x/y (easting/longitude first, whatever the CRS's axis order) from source to target."""
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
    try:
        crs = CRS.from_user_input(srs)
    except CRSError as exc:
        raise ValueError(str(exc)) from exc
    authority = crs.to_authority(min_confidence=90)
    if authority is None or not authority[1].isdigit():
        raise ValueError(f"{srs} has no numeric authority code")
    wkt = crs.to_wkt("WKT1_GDAL") or crs.to_wkt()
    return SrsDefinition(crs.name, authority[0], int(authority[1]), wkt)
