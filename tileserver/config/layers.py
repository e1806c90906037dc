"""A layer's checks beyond its types, and its `Layer`: grids, formats, geoms, dimensions
(its WMS source: `layer_wms.py`). Messages name the key and, for an inherited value, where
it was set (`sections.Scope`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from tileserver.config.layer_document import DimensionDoc, EmptyTileDoc, GeomDoc, LayerDoc
from tileserver.config.layer_model import (
    _NAME_RE,
    _VALUE_RE,
    _WMTS_PARAMETERS,
    DEFAULT_OUTPUT_FORMAT,
    FORMATS,
    LAYER_TYPES,
    MISSING_TILE,
    Dimension,
    EmptyTile,
    Layer,
    LayerCost,
    LayerGeom,
)
from tileserver.config.layer_wms import wms_source
from tileserver.config.model import CacheConfig
from tileserver.config.sections import Errors, Scope, bbox_of, names_of, texts
from tileserver.crs import transform_bbox
from tileserver.grid import Grid
from tileserver.types import BBox
from tileserver.uniform_tiles import format_colour, identify, parse_colour

UTFGRID = "UTFGrid tiles (TileCloud-chain's `extension: json`, `output_format: grid`)"
# Encoder names per image format: what a layer's output_format may say for its extension.
_ENCODER_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg"}


def config_path(raw: str, base_dir: Path) -> Path:
    """A path of the configuration: '~' expanded, relative to the config file's folder."""
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else base_dir / path


def unreadable(path: Path) -> str | None:
    """Why path is not a readable file, or None when it is one."""
    if path.is_file() and os.access(path, os.R_OK):
        return None
    return "no such file" if not path.exists() else "not a readable file"


def is_utfgrid(doc: LayerDoc) -> bool:
    return (
        doc.extension == "json"
        or (doc.output_format or "").lower() == "grid"
        or (doc.mime_type or "").lower() == "application/utfgrid"
    )


def _formats(s: Scope, doc: LayerDoc) -> tuple[str, str] | None:
    """(mime_type, output_format), cross-checked with the extension: a layer never stores
    bytes of one format under another's name or Content-Type."""
    if doc.extension not in FORMATS:
        s.error("extension", f"unsupported extension {doc.extension!r} (supported: png, jpeg)")
        return None
    expected = FORMATS[doc.extension]
    mime_type = doc.mime_type or expected
    if mime_type != expected:
        s.error("mime_type", f"{mime_type!r} does not match extension {doc.extension!r}")
        return None
    output_format = doc.output_format or DEFAULT_OUTPUT_FORMAT[doc.extension]
    encoder = re.split(r"[:0-9]", output_format.lower(), maxsplit=1)[0]
    encoder = {"jpg": "jpeg"}.get(encoder, encoder)
    if encoder != _ENCODER_FORMATS[doc.extension]:
        s.error(
            "output_format",
            f"{output_format!r} encodes {encoder.upper() or '?'} tiles but the layer's "
            f"extension is {doc.extension!r} ({expected}): set an output_format of that "
            "format (e.g. "
            f"{DEFAULT_OUTPUT_FORMAT[doc.extension]!r}) or leave it out",
        )
        return None
    return mime_type, output_format


def _grids(s: Scope, doc: LayerDoc, grids: Mapping[str, Grid | None]) -> list[Grid]:
    names = list(doc.grids or ())
    if doc.grid is not None and doc.grid not in names:
        names.insert(0, doc.grid)
    if not names:
        # TileCloud-chain's rule: a layer without `grid` nor `grids` is on every grid.
        names = list(grids)
    if not names:
        s.error("grid", "missing required key")
        return []
    found = []
    for name in names:
        key = "grid" if name == doc.grid else "grids"
        grid = grids.get(name)
        if name not in grids:
            s.error(key, f"unknown grid {name!r} (defined: {names_of(grids)})")
        elif grid is None:
            s.failed = True  # defined, and wrong: reported at the grid
        else:
            found.append(grid)
    return found


def _empty(
    s: Scope, key: str, detection: EmptyTileDoc | None, tile_size: int, doc: LayerDoc
) -> EmptyTile | None:
    """An empty tile's detection: size and hash, or colour, or both. A TileCloud-chain hash
    of a uniform tile (tile_size: 0 for a metatile's, which is not looked up) gives the
    colour where none is given: tileserver's encoder writes other bytes for it."""
    if detection is None:
        return None
    colour = None
    if detection.color is not None:
        try:
            colour = parse_colour(detection.color)
        except ValueError as exc:
            s.error(f"{key}.color", str(exc))
    if detection.color is None or detection.size is not None or detection.hash is not None:
        for part in ("size", "hash"):
            if getattr(detection, part) is None:
                s.error(f"{key}.{part}", "missing required key")
    if detection.size is None or detection.hash is None:
        return EmptyTile(None, None, colour)
    identified = ""
    if colour is None and tile_size:
        image_format = "jpeg" if doc.extension in ("jpeg", "jpg") else "png"
        found = identify(detection.size, detection.hash, tile_size, image_format)
        if found is not None:
            colour, encoder = found
            identified = f"a {format_colour(colour)} {tile_size}x{tile_size} tile, {encoder}"
            s.warn(key, f"the hash of {identified}: a tile all {format_colour(colour)} is "
                        "empty whatever encoder writes it (as `color: "
                        f"'{format_colour(colour)}'` says)")  # fmt: skip
    return EmptyTile(detection.size, detection.hash, colour, identified)


def _grid_bboxes(s: Scope, bbox: BBox | None, grids: list[Grid]) -> tuple[BBox, ...]:
    """The layer's bbox on each of its grids: `bbox` is in the first grid's CRS, and is
    reprojected to the others'; without one, each grid's own bbox."""
    found = []
    for grid in grids:
        if bbox is None:
            found.append(grid.bbox)
            continue
        try:
            on_grid = transform_bbox(bbox, grids[0].srs, grid.srs)
        except ValueError as exc:
            s.error("bbox", f"cannot be reprojected to grid {grid.name!r}: {exc}")
            continue
        if not on_grid.intersects(grid.bbox):
            where = "" if grid is grids[0] else f" (reprojected to {grid.srs})"
            s.error("bbox", f"{list(bbox.as_tuple())} is outside grid {grid.name!r}{where}")
            break  # one message is enough
        found.append(on_grid)
    return tuple(found)


def _dimensions(s: Scope, docs: list[DimensionDoc]) -> tuple[Dimension, ...]:
    dimensions = []
    for i, d in enumerate(docs):
        key = f"dimensions[{i}]"
        values, generate = texts(d.values), texts(d.generate)
        if not _NAME_RE.match(d.name) or d.name.lower() in _WMTS_PARAMETERS:
            s.error(f"{key}.name", f"invalid dimension name {d.name!r}")
            continue
        bad = [v for v in values if not _VALUE_RE.match(v)]
        if bad:
            s.error(f"{key}.values", f"invalid value {bad[0]!r}: use letters, digits and '_.:+-'")
            continue
        if d.default not in values:
            s.error(f"{key}.default", f"{d.default!r} is not one of the values {list(values)}")
            continue
        wrong = [v for v in generate if v not in values]
        if wrong:
            s.error(f"{key}.generate", f"{wrong[0]!r} is not one of the values {list(values)}")
            continue
        dimensions.append(Dimension(d.name, values, d.default, generate))
    names = [d.name.lower() for d in dimensions]
    if len(set(names)) != len(names):
        s.error("dimensions", "dimension names must be unique")
    return tuple(dimensions)


def _geoms(
    s: Scope, docs: list[GeomDoc], grids: list[Grid], base_dir: Path, connection: str
) -> tuple[LayerGeom, ...]:
    geoms = []
    for i, g in enumerate(docs):
        key = f"geoms[{i}]"
        failed = s.failed
        s.failed = False
        if (g.file is None) == (g.sql is None):
            both = "not both" if g.file is not None else "none given"
            s.error(key, f"needs exactly one of 'file' and 'sql', {both}")
        if g.file is not None and g.connection is not None:
            s.error(f"{key}.connection", "only for an 'sql' entry")
        path = None
        if g.file is not None:
            path = config_path(g.file, base_dir)
            reason = unreadable(path)
            if reason is not None:
                s.error(f"{key}.file", f"cannot read geometry file '{path}': {reason}")
        if g.sql is not None and not g.sql.strip():
            s.error(f"{key}.sql", "is empty")
        elif g.sql is not None and re.match(r"(?i)\s*select\b", g.sql):
            # TileCloud-chain's form: it is run as SELECT ST_AsBinary(geom) FROM (SELECT <sql>).
            s.error(
                f"{key}.sql", "write it without the leading SELECT, e.g. 'way AS geom FROM ...'"
            )
        low, high = g.min_resolution, g.max_resolution
        if low is not None and high is not None and low > high:
            s.error(f"{key}.min_resolution", f"{low:g} is above max_resolution {high:g}")
        geom = LayerGeom(path, g.sql, g.connection or connection, low, high)
        for grid in grids if not s.failed else ():
            if not any(geom.applies_to(r) for r in grid.resolutions):
                s.error(key, f"no level of grid {grid.name!r} has a resolution between "
                             "min_resolution and max_resolution")  # fmt: skip
        if not s.failed:
            geoms.append(geom)
        s.failed = s.failed or failed
    return tuple(geoms)


def build_layer(
    errors: Errors,
    name: str,
    doc: LayerDoc,
    origin: Mapping[str, str],
    grids: Mapping[str, Grid | None],
    caches: Mapping[str, CacheConfig | None],
    base_dir: Path,
    default_cache: str | None,
    default_connection: str,
) -> Layer | None:
    s = Scope(errors, name, origin)
    if "type" not in doc.model_fields_set and doc.mapfile is not None:
        s.error("type", "missing required key: a layer with a `mapfile` is `type: mapnik` "
                        "(where type is absent, TileCloud-chain 1.x takes `wms`)")  # fmt: skip
        return None
    if doc.type not in LAYER_TYPES:
        s.error("type", f"unknown layer type {doc.type!r} (supported: {', '.join(LAYER_TYPES)})")
        return None
    layer_grids = _grids(s, doc, grids)
    bbox = bbox_of(errors, f"layers.{name}.bbox", doc.bbox) if doc.bbox is not None else None
    if doc.bbox is not None and bbox is None:
        s.failed = True
    formats = _formats(s, doc)
    if doc.missing_tile not in MISSING_TILE:
        s.error("missing_tile", f"expected one of {', '.join(MISSING_TILE)}, "
                                f"got {doc.missing_tile!r}")  # fmt: skip
    if not _NAME_RE.match(doc.wmts_style):
        s.error("wmts_style", f"invalid style name {doc.wmts_style!r}")
    cache = doc.cache if doc.cache is not None else default_cache
    if doc.cache is not None and doc.cache not in caches:
        s.error("cache", f"unknown cache {doc.cache!r} (defined: {names_of(caches)})")
    elif doc.cache is not None and caches.get(doc.cache) is None:
        s.failed = True  # defined, and wrong: reported at the cache
    elif cache is None or caches.get(cache) is None:
        cache = None  # an unknown generation.default_cache is reported once, at its path
    grid_bboxes = _grid_bboxes(s, bbox, layer_grids)
    for grid in layer_grids:
        if doc.meta_buffer > 4 * grid.tile_size:
            s.error("meta_buffer", f"at most {4 * grid.tile_size} pixels, got {doc.meta_buffer}")
    mapfile = None
    if doc.type == "mapnik" and doc.mapfile is None:
        s.error("mapfile", "missing required key")
    elif doc.mapfile is not None:
        mapfile = config_path(doc.mapfile, base_dir)
        reason = unreadable(mapfile)
        if reason is not None:
            s.error("mapfile", f"cannot read Mapnik file '{mapfile}': {reason}")
    connection = doc.connection
    if connection and doc.type != "mapnik":
        if origin.get("connection") != "layer_default":
            s.error("connection", "only for layers of type 'mapnik' (PostGIS datasources)")
        connection = ""
    dimensions = _dimensions(s, doc.dimensions)
    geoms = _geoms(s, doc.geoms, layer_grids, base_dir, default_connection)
    wms = wms_source(s, doc)
    tile_size = layer_grids[0].tile_size if layer_grids else 256
    empty_tile = _empty(s, "empty_tile_detection", doc.empty_tile_detection, tile_size, doc)
    empty_metatile = _empty(s, "empty_metatile_detection", doc.empty_metatile_detection, 0, doc)
    if s.failed or not layer_grids or formats is None:
        return None

    cost = doc.cost
    return Layer(
        name=name,
        type=doc.type,
        title=doc.title if doc.title is not None else name,
        abstract=doc.abstract,
        grid=layer_grids[0],
        grids=tuple(layer_grids),
        bbox=grid_bboxes[0],
        grid_bboxes=grid_bboxes,
        mapfile=mapfile,
        meta=doc.meta,
        meta_size=doc.meta_size,
        meta_buffer=doc.meta_buffer,
        mime_type=formats[0],
        extension=doc.extension,
        output_format=formats[1],
        wmts_style=doc.wmts_style,
        dimensions=dimensions,
        expires_hours=doc.expires,
        min_resolution_seed=doc.min_resolution_seed,
        cache=cache,
        missing_tile=doc.missing_tile,
        empty_tile_detection=empty_tile,
        empty_metatile_detection=empty_metatile,
        geoms=geoms,
        wms=wms,
        connection=connection,
        px_buffer=doc.px_buffer,
        data_buffer=doc.data_buffer,
        cost=None if cost is None else LayerCost(**cost.model_dump()),
        stale_while_revalidate=doc.stale_while_revalidate,
        stale_if_error=doc.stale_if_error,
    )
