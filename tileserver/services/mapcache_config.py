"""A MapCache configuration (mapcache.xml) for the layers of a tileserver configuration,
for teams that keep MapCache in front of their WMS as TileCloud-chain 1.x did.

`generate_controller --generate-mapcache-config` writes what `mapcache_config` returns:
the grids, a `memcache` cache on `memcached.servers`, and for each `type: wms` layer a
WMS source and a tileset with the layer's metatiles, buffer, expiry, format, bbox and
dimensions. A Mapnik layer has no source MapCache can use: it is left out, with an XML
comment saying so. Syntax: MapCache 1.14 (https://mapserver.org/mapcache/config.html).
Pure: no I/O; ElementTree escapes every text and attribute.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tileserver.config import Config, Layer, WmsSource
from tileserver.crs import bbox_to_wgs84
from tileserver.errors import ConfigError
from tileserver.grid import Grid, format_resolution
from tileserver.types import BBox

CACHE_NAME = "memcached"
# Grids MapCache defines itself; declaring one of these names again is a parse error.
BUILTIN_GRIDS = frozenset({"WGS84", "GoogleMapsCompatible", "g"})
# memcached reads an expiry above 30 days as a Unix time, i.e. long past.
MAX_MEMCACHED_TTL = 30 * 24 * 3600
MAX_RETRIES = 10  # MapCache refuses more
# MapCache reads WMS parameters and HTTP headers from element names.
_ELEMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_FEET = (0.3048, 0.30480060960121924)


def has_mapcache_source(layer: Layer) -> bool:
    """True for the layers MapCache can fetch images for: those of `type: wms`."""
    return layer.wms is not None


def mapcache_config(config: Config, layers: Sequence[Layer] | None = None) -> str:
    """The mapcache.xml text for layers (default: every layer of config); ConfigError
    without a `memcached` section or without any `type: wms` layer, or where a value
    cannot be written into MapCache's XML."""
    chosen = list(config.layers.values()) if layers is None else list(layers)
    errors: list[str] = []
    if config.memcached is None:
        errors.append(
            "memcached: missing section: the MapCache configuration's memcache cache "
            "takes its servers from memcached.servers"
        )
    if not any(has_mapcache_source(layer) for layer in chosen):
        names = ", ".join(layer.name for layer in chosen) or "none"
        errors.append(
            f"layers: no layer of type wms (layers: {names}): MapCache has no source for "
            "Mapnik layers, only type: wms layers become MapCache tilesets"
        )
    if errors:
        raise ConfigError(errors)
    assert config.memcached is not None

    root = ET.Element("mapcache")
    metadata = ET.SubElement(root, "metadata")
    _text(metadata, "title", config.metadata.title, "metadata.title", errors)
    if config.metadata.abstract:
        _text(metadata, "abstract", config.metadata.abstract, "metadata.abstract", errors)

    every_grid = {grid.name: grid for layer in chosen for grid in layer.grids}
    grids = _grid_names(every_grid.values())
    for grid in every_grid.values():
        _grid(root, grid, grids[grid.name], errors)

    for quality in sorted({q for layer in chosen if (q := _jpeg_quality(layer)) is not None}):
        jpeg = ET.SubElement(root, "format", name=f"JPEG{quality}", type="JPEG")
        ET.SubElement(jpeg, "quality").text = str(quality)

    root.append(
        _comment(
            "MapCache keeps its own keys (tileset, grid, z/y/x): its tiles are not shared "
            "with tileserver's, and the memcached prefix does not apply."
        )
    )
    cache = ET.SubElement(root, "cache", name=CACHE_NAME, type="memcache")
    for host, port in config.memcached.servers:
        server = ET.SubElement(cache, "server")
        _text(server, "host", host, "memcached.servers", errors)
        ET.SubElement(server, "port").text = str(port)

    for layer in chosen:
        if layer.wms is not None:
            _source(root, layer, layer.wms, config, errors)
    for layer in chosen:
        if layer.wms is not None:
            _tileset(root, layer, grids, errors)
        else:
            root.append(
                _comment(
                    f"layer {layer.name} (type: {layer.type}) is left out: MapCache cannot "
                    "render Mapnik styles, it only fetches images from a source such as a "
                    "WMS. Serve it with tileserver, or put it behind a WMS and declare it "
                    "as a type: wms layer."
                )
            )

    # WMTS (KVP and REST) is what tileserver serves; the demo pages help to check it.
    ET.SubElement(root, "service", type="wmts", enabled="true")
    ET.SubElement(root, "service", type="demo", enabled="true")
    ET.SubElement(root, "errors").text = "report"
    ET.SubElement(root, "log_level").text = "warn"
    if errors:
        raise ConfigError(errors)

    ET.indent(root, space="  ")
    written_from = f" from {config.source}" if config.source is not None else ""
    header = _comment(
        f"Written by tileserver's generate_controller{written_from}: regenerate it rather "
        "than edit it."
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + ET.tostring(header, encoding="unicode")
        + "\n"
        + ET.tostring(root, encoding="unicode")
        + "\n"
    )


# --- elements -------------------------------------------------------------------------------


def _grid(root: ET.Element, grid: Grid, name: str, errors: list[str]) -> None:
    where = f"grids.{grid.name}"
    if name != grid.name:
        root.append(
            _comment(
                f"grid {grid.name} is named {name} here: MapCache defines a grid "
                f"{grid.name} of its own."
            )
        )
    if grid.matrix_identifier == "resolution":
        root.append(
            _comment(
                f"grid {name}: MapCache names its TileMatrix by zoom level (0, 1...), "
                "not by resolution as tileserver does for this grid."
            )
        )
    element = ET.SubElement(root, "grid", name=name)
    _text(element, "srs", grid.srs, f"{where}.srs", errors)
    units = _units(grid)
    if units is None:
        errors.append(
            f"{where}.srs: MapCache grids are in m, dd or ft; {grid.srs} has "
            f"{format_resolution(grid.meters_per_unit)} m per unit"
        )
    else:
        ET.SubElement(element, "units").text = units
    ET.SubElement(element, "size").text = f"{grid.tile_size} {grid.tile_size}"
    ET.SubElement(element, "extent").text = _numbers(grid.bbox.as_tuple())
    ET.SubElement(element, "resolutions").text = _numbers(grid.resolutions)
    # Our grids' origin is the top-left corner of their bbox (OGC WMTS).
    ET.SubElement(element, "origin").text = "top-left"


def _source(
    root: ET.Element, layer: Layer, wms: WmsSource, config: Config, errors: list[str]
) -> None:
    where = f"layers.{layer.name}"
    notes = []
    if wms.version != "1.1.1":
        notes.append(
            f"MapCache asks WMS {wms.version} layers in version 1.1.1 (SRS, X/Y), the only "
            "version its WMS source speaks"
        )
    if wms.generate_salt:
        notes.append("MapCache cannot add generate_salt's random SALT parameter")
    if wms.retries > MAX_RETRIES:
        notes.append(f"retries {wms.retries} lowered to MapCache's maximum, {MAX_RETRIES}")
    for note in notes:
        root.append(_comment(f"layer {layer.name}: {note}."))
    source = ET.SubElement(root, "source", name=layer.name, type="wms")
    getmap = ET.SubElement(ET.SubElement(source, "getmap"), "params")
    given = {name.upper() for name, _ in wms.params}
    defaults = [("LAYERS", wms.layers)]
    if "FORMAT" not in given:
        defaults.append(("FORMAT", layer.mime_type))
    _params(getmap, [*defaults, *wms.params], f"{where}.params", errors)
    if wms.query_layers:
        featureinfo = ET.SubElement(source, "getfeatureinfo")
        _text(
            featureinfo, "info_formats", ",".join(wms.info_formats), f"{where}.info_formats", errors
        )
        params = ET.SubElement(featureinfo, "params")
        _text(params, "QUERY_LAYERS", wms.query_layers, f"{where}.query_layers", errors)
    http = ET.SubElement(source, "http")
    _text(http, "url", wms.url, f"{where}.url", errors)
    if wms.headers:
        headers = ET.SubElement(http, "headers")
        _params(headers, wms.headers, f"{where}.headers", errors)
    seconds = str(max(1, math.ceil(wms.timeout)))  # MapCache takes whole seconds
    ET.SubElement(http, "connection_timeout").text = seconds
    ET.SubElement(http, "timeout").text = seconds
    ET.SubElement(source, "retries").text = str(min(wms.retries, MAX_RETRIES))
    ET.SubElement(source, "retry_delay").text = format_resolution(config.upstream.retry_backoff)


def _tileset(
    root: ET.Element, layer: Layer, grid_names: Mapping[str, str], errors: list[str]
) -> None:
    where = f"layers.{layer.name}"
    ttl = layer.ttl_seconds
    if ttl > MAX_MEMCACHED_TTL:
        root.append(
            _comment(
                f"layer {layer.name}: auto_expire lowered to 30 days, the longest expiry "
                "memcached takes as a duration."
            )
        )
    if layer.wmts_style != "default":
        root.append(
            _comment(
                f"layer {layer.name}: MapCache names every WMTS style 'default', not "
                f"{layer.wmts_style}."
            )
        )
    tileset = ET.SubElement(root, "tileset", name=layer.name)
    metadata = ET.SubElement(tileset, "metadata")
    _text(metadata, "title", layer.title, f"{where}.title", errors)
    if layer.abstract:
        _text(metadata, "abstract", layer.abstract, f"{where}.abstract", errors)
    extent = _restricted_extent(layer)
    wgs84 = bbox_to_wgs84(extent or layer.grid.bbox, layer.grid.srs)
    # MapCache computes it only for EPSG:4326 grids; WMTS clients want it for every layer.
    ET.SubElement(metadata, "wgs84boundingbox").text = _numbers(wgs84.as_tuple())
    ET.SubElement(tileset, "source").text = layer.name
    ET.SubElement(tileset, "cache").text = CACHE_NAME
    for variant in layer.variants():  # TileCloud-chain's `grids`: one <grid> each
        grid = ET.SubElement(tileset, "grid")
        grid.text = grid_names[variant.grid.name]
        restricted = _restricted_extent(variant)
        if restricted is not None:
            grid.set("restricted_extent", _numbers(restricted.as_tuple()))
            # The tiles that touch the bbox, as tileserver serves (MapCache adds 5 by default).
            grid.set("tolerance", "0")
    jpeg = _jpeg_quality(layer)
    ET.SubElement(tileset, "format").text = (
        f"JPEG{jpeg}" if jpeg is not None else "PNG8" if _is_png8(layer) else "PNG"
    )
    size = layer.effective_meta_size
    ET.SubElement(tileset, "metatile").text = f"{size} {size}"
    ET.SubElement(tileset, "metabuffer").text = str(layer.meta_buffer)
    ET.SubElement(tileset, "expires").text = str(ttl)  # HTTP max-age
    ET.SubElement(tileset, "auto_expire").text = str(min(ttl, MAX_MEMCACHED_TTL))  # memcached
    if layer.dimensions:
        dimensions = ET.SubElement(tileset, "dimensions")
        for dimension in layer.dimensions:
            path = f"{where}.dimensions.{dimension.name}"
            for value in (dimension.name, dimension.default, *dimension.values):
                _check(value, path, errors)
            element = ET.SubElement(
                dimensions, "dimension", type="values", name=dimension.name,
                default=dimension.default,
            )  # fmt: skip
            for value in dimension.values:
                ET.SubElement(element, "value").text = value


# --- values ---------------------------------------------------------------------------------


def _grid_names(grids: Iterable[Grid]) -> dict[str, str]:
    """Our grid names, but for those MapCache has already: prefixed with 'tileserver_'."""
    ours = {grid.name for grid in grids}
    names: dict[str, str] = {}
    for name in sorted(ours):
        new = name
        while new in BUILTIN_GRIDS or (new != name and new in ours):
            new = f"tileserver_{new}"
        names[name] = new
    return names


def _units(grid: Grid) -> str | None:
    if grid.meters_per_unit == 1.0:
        return "m"
    if math.isclose(grid.meters_per_unit, 2 * math.pi * 6378137.0 / 360):
        return "dd"
    if any(math.isclose(grid.meters_per_unit, feet) for feet in _FEET):
        return "ft"
    return None


def _restricted_extent(layer: Layer) -> BBox | None:
    """The layer's bbox within its grid's, None when it is the whole grid."""
    grid = layer.grid.bbox
    box = BBox(
        max(layer.bbox.minx, grid.minx),
        max(layer.bbox.miny, grid.miny),
        min(layer.bbox.maxx, grid.maxx),
        min(layer.bbox.maxy, grid.maxy),
    )
    return None if box == grid else box


def _encoder(layer: Layer) -> str:
    """The base of Mapnik's encoder name: 'png8' of 'png8:m=h'."""
    return layer.output_format.split(":", 1)[0].lower()


def _jpeg_quality(layer: Layer) -> int | None:
    """The JPEG quality of a jpeg layer (Mapnik's 'jpeg85'; 85, Mapnik's default, for
    plain 'jpeg'); None for a PNG layer."""
    if layer.mime_type != "image/jpeg":
        return None
    digits = _encoder(layer).removeprefix("jpeg")
    return min(100, max(1, int(digits))) if digits.isdigit() else 85


def _is_png8(layer: Layer) -> bool:
    """Mapnik's palette PNGs (png8, png256) are MapCache's quantized PNG8."""
    return _encoder(layer) in ("png8", "png256")


def _numbers(values: Iterable[float]) -> str:
    return " ".join(format_resolution(v) for v in values)


def _check(value: str, where: str, errors: list[str]) -> None:
    if _NOT_XML.search(value):
        errors.append(f"{where}: {value!r} has characters an XML file cannot hold")


def _text(parent: ET.Element, tag: str, value: str, where: str, errors: list[str]) -> None:
    _check(value, where, errors)
    ET.SubElement(parent, tag).text = value


def _params(
    parent: ET.Element, pairs: Iterable[tuple[str, str]], where: str, errors: list[str]
) -> None:
    """One child per (name, value): MapCache reads WMS parameters and HTTP headers so."""
    for name, value in pairs:
        if not _ELEMENT_NAME.match(name):
            errors.append(
                f"{where}.{name}: MapCache takes the name from an XML element name, which "
                "cannot be this one (letters, digits, '_', '-' and '.' only)"
            )
            continue
        _text(parent, name, value, f"{where}.{name}", errors)


def _comment(text: str) -> ET.Element[Any]:
    """An XML comment of text, which may name anything: '--' cannot appear in one."""
    text = _NOT_XML.sub("?", text)
    while "--" in text:
        text = text.replace("--", "- -")
    return ET.Comment(f" {text} ")
