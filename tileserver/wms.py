"""WMS GetMap and GetFeatureInfo requests of `type: wms` layers, and reading a WMS's
error answers. Pure functions: the adapter sends what these build.

Versions 1.1.1 (SRS, X/Y) and 1.3.0 (CRS, I/J, and the CRS's own axis order in BBOX:
latitude first for EPSG:4326; OGC 06-042, 6.7.3).
"""

from __future__ import annotations

import html
import re
import secrets

from tileserver.config import WmsSource
from tileserver.grid import Grid
from tileserver.types import BBox

_SERVICE_EXCEPTION = re.compile(
    rb"<(?:\w+:)?ServiceException\b[^>]*>(.*?)</(?:\w+:)?ServiceException>", re.DOTALL
)
_TAGS = re.compile(rb"<[^>]*>")
_SPACES = re.compile(r"\s+")
_SHOWN = 300  # characters of an upstream message carried in errors


def _bbox(source: WmsSource, grid: Grid, bbox: BBox) -> str:
    values = bbox.as_tuple()
    if source.version == "1.3.0" and grid.yx_axis_order:
        values = (bbox.miny, bbox.minx, bbox.maxy, bbox.maxx)
    return ",".join(repr(float(v)) for v in values)


def _common(
    source: WmsSource, grid: Grid, bbox: BBox, width: int, height: int, request: str
) -> list[tuple[str, str]]:
    crs_key = "CRS" if source.version == "1.3.0" else "SRS"
    params = [
        ("SERVICE", "WMS"),
        ("VERSION", source.version),
        ("REQUEST", request),
        ("LAYERS", source.layers),
        (crs_key, grid.srs),
        ("BBOX", _bbox(source, grid, bbox)),
        ("WIDTH", str(width)),
        ("HEIGHT", str(height)),
    ]
    if not any(name.upper() == "STYLES" for name, _ in source.params):
        params.append(("STYLES", ""))
    return params


def getmap_params(
    source: WmsSource, grid: Grid, bbox: BBox, width: int, height: int, mime_type: str
) -> list[tuple[str, str]]:
    """The query of one GetMap: the layer's own `params` override FORMAT and STYLES."""
    params = _common(source, grid, bbox, width, height, "GetMap")
    if not any(name.upper() == "FORMAT" for name, _ in source.params):
        params.append(("FORMAT", mime_type))
    params.extend(source.params)
    if source.generate_salt:
        params.append(("SALT", secrets.token_hex(4)))
    return params


def featureinfo_params(
    source: WmsSource, grid: Grid, bbox: BBox, size: int, i: int, j: int, info_format: str
) -> list[tuple[str, str]]:
    """GetFeatureInfo at pixel (i, j) of a size x size map of bbox (a tile)."""
    params = _common(source, grid, bbox, size, size, "GetFeatureInfo")
    params.extend(
        (name, value) for name, value in source.params if name.upper() not in ("FORMAT", "SALT")
    )
    params.append(("FORMAT", "image/png"))
    params.append(("QUERY_LAYERS", source.query_layers))
    params.append(("INFO_FORMAT", info_format))
    x_key, y_key = ("I", "J") if source.version == "1.3.0" else ("X", "Y")
    params.extend([(x_key, str(i)), (y_key, str(j))])
    return params


def is_service_exception(content_type: str, body: bytes) -> bool:
    """True for a WMS error document (answered with a 200 by most servers)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("application/vnd.ogc.se_xml", "application/vnd.ogc.se+xml"):
        return True
    return kind.endswith("xml") and b"ServiceException" in body[:4096]


def error_message(content_type: str, body: bytes) -> str:
    """A short, single-line account of a non-image answer, for logs and OWS reports:
    the ServiceException's text, else the page's text, else its type."""
    match = _SERVICE_EXCEPTION.search(body[:65536])
    raw = match.group(1) if match else _TAGS.sub(b" ", body[:4096])
    text = html.unescape(raw.decode("utf-8", "replace"))
    text = _SPACES.sub(" ", text.replace("<![CDATA[", "").replace("]]>", "")).strip()
    if not text:
        return f"an empty {content_type or 'untyped'} answer"
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
