"""WMTS 1.0.0 GetTile requests, KVP and REST, validated into a TileRequest.

Pure functions over the configuration; every mistake is an OWSException with the
standard exceptionCode and locator (07-057r7, 7.2.4.7 and 8.3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tileserver.config import FORMATS, Config, Layer, info_extension
from tileserver.errors import (
    OWSException,
    invalid_parameter,
    missing_parameter,
    not_found,
    operation_not_supported,
    tile_out_of_range,
)
from tileserver.tile_request import FeatureInfoRequest, TileRequest
from tileserver.types import TileCoord

VERSION = "1.0.0"
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # fullmatch: `$` would let a final "\n" in
_SHOWN = 80  # characters of a client's value echoed in a message


@dataclass(frozen=True, slots=True)
class CapabilitiesRequest:
    pass


def _show(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def normalize_kvp(items: list[tuple[str, str]]) -> dict[str, str]:
    """Parameter names are case-insensitive (07-057r7, 8.1): keys lowered, first value kept."""
    params: dict[str, str] = {}
    for key, value in items:
        params.setdefault(key.lower(), value)
    return params


def parse_kvp(
    config: Config, params: Mapping[str, str]
) -> TileRequest | FeatureInfoRequest | CapabilitiesRequest:
    """A KVP request (names already lower-cased by `normalize_kvp`)."""
    service = params.get("service")
    if service is None or service == "":
        raise missing_parameter("service")
    if service != "WMTS":
        raise invalid_parameter("service", f"Unknown service {_show(service)}: expected 'WMTS'")
    request = params.get("request")
    if request is None or request == "":
        raise missing_parameter("request")
    if request == "GetCapabilities":
        accept = params.get("acceptversions")
        if accept and VERSION not in accept.split(","):
            raise OWSException(
                "VersionNegotiationFailed",
                f"Only version {VERSION} is supported, not {_show(accept)}",
                "acceptversions",
            )
        return CapabilitiesRequest()
    if request not in ("GetTile", "GetFeatureInfo"):
        raise operation_not_supported(request[:_SHOWN])
    version = _required(params, "version")
    if version != VERSION:
        raise invalid_parameter("version", f"Unsupported version {_show(version)}: use {VERSION}")
    names = ("layer", "style", "format", "tilematrixset", "tilematrix", "tilerow", "tilecol")
    values = {name: _required(params, name, allow_empty=name == "style") for name in names}
    layer = _layer(config, values["layer"])
    if values["format"] != layer.mime_type:
        raise invalid_parameter(
            "format",
            f"Unknown format {_show(values['format'])} for layer {layer.name!r}: use "
            f"{layer.mime_type}",
        )
    dimensions = {
        d.name.lower(): params[d.name.lower()] for d in layer.dimensions if d.name.lower() in params
    }
    info: tuple[str, str, str] | None = None
    if request == "GetFeatureInfo":
        info_formats = _queryable(layer)
        info_format = _required(params, "infoformat")
        if info_format not in info_formats:
            raise invalid_parameter(
                "infoformat",
                f"Unknown InfoFormat {_show(info_format)} for layer {layer.name!r}: use one of "
                f"{list(info_formats)}",
            )
        info = (_required(params, "i"), _required(params, "j"), info_format)
    tile = tile_request(
        layer,
        style=values["style"],
        matrix_set=values["tilematrixset"],
        matrix=values["tilematrix"],
        row=values["tilerow"],
        col=values["tilecol"],
        dimensions=dimensions,
    )
    if info is not None:
        return feature_info_request(tile, *info)
    return tile


def parse_rest(config: Config, path: str) -> TileRequest | FeatureInfoRequest:
    """A REST path relative to /wmts/1.0.0/:
    {Layer}/{Style}/[{dimension values}/]{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.{ext}
    for a tile, and .../{TileCol}/{J}/{I}.{ext} for GetFeatureInfo (ext names the format).
    """
    segments = path.split("/")
    if len(segments) < 6 or "" in segments:
        raise not_found(f"No such resource: /wmts/1.0.0/{path[:200]}")
    layer_name = segments[0]
    last, dot, extension = segments[-1].rpartition(".")
    if not dot:
        raise not_found(f"No such resource: /wmts/1.0.0/{path[:200]}")
    layer = _layer(config, layer_name)
    tile_segments = 6 + len(layer.dimensions)
    if len(segments) == tile_segments + 2:
        return _rest_feature_info(layer, segments, last, extension)
    if len(segments) != tile_segments:
        raise not_found(
            f"No such resource: layer {layer.name!r} takes "
            f"{len(layer.dimensions)} dimension value(s) in its REST URLs"
        )
    if FORMATS.get(extension) != layer.mime_type:
        raise invalid_parameter(
            "format",
            f"Unknown extension {_show(extension)} for layer {layer.name!r}: use "
            f".{layer.extension}",
        )
    values = segments[2 : 2 + len(layer.dimensions)]
    dimensions = {d.name.lower(): v for d, v in zip(layer.dimensions, values, strict=True)}
    return tile_request(
        layer,
        style=segments[1],
        matrix_set=segments[-4],
        matrix=segments[-3],
        row=segments[-2],
        col=last,
        dimensions=dimensions,
    )


def _rest_feature_info(
    layer: Layer, segments: list[str], i_text: str, extension: str
) -> FeatureInfoRequest:
    formats = {info_extension(f): f for f in _queryable(layer)}
    info_format = formats.get(extension)
    if info_format is None:
        raise invalid_parameter(
            "infoformat",
            f"Unknown extension {_show(extension)} for the feature info of layer "
            f"{layer.name!r}: use one of {['.' + e for e in formats]}",
        )
    dimension_values = segments[2 : 2 + len(layer.dimensions)]
    dimensions = {
        d.name.lower(): v for d, v in zip(layer.dimensions, dimension_values, strict=True)
    }
    tile = tile_request(
        layer,
        style=segments[1],
        matrix_set=segments[-6],
        matrix=segments[-5],
        row=segments[-4],
        col=segments[-3],
        dimensions=dimensions,
    )
    return feature_info_request(tile, i_text, segments[-2], info_format)


def _queryable(layer: Layer) -> tuple[str, ...]:
    """The layer's GetFeatureInfo formats; OperationNotSupported when it has none."""
    if layer.wms is None or not layer.wms.query_layers:
        raise OWSException(
            "OperationNotSupported",
            f"Layer {layer.name!r} is not queryable: GetFeatureInfo is not supported",
            "request",
            status=501,
        )
    return layer.wms.info_formats


def feature_info_request(
    tile: TileRequest, i_text: str, j_text: str, info_format: str
) -> FeatureInfoRequest:
    """Checks the pixel: integers within the tile (07-057r7, table 30: PointIJOutOfRange)."""
    size = tile.layer.grid.tile_size
    pixel = []
    for name, text in (("i", i_text), ("j", j_text)):
        value = _integer(name.upper(), text)
        if not 0 <= value < size:
            raise OWSException(
                "PointIJOutOfRange",
                f"{name.upper()} {value} is outside the tile: use 0 to {size - 1}",
                name,
            )
        pixel.append(value)
    return FeatureInfoRequest(tile=tile, i=pixel[0], j=pixel[1], info_format=info_format)


def tile_request(
    layer: Layer,
    *,
    style: str,
    matrix_set: str,
    matrix: str,
    row: str,
    col: str,
    dimensions: Mapping[str, str],
) -> TileRequest:
    """Validates the parts of a GetTile shared by KVP and REST (dimension keys lower-case)."""
    if style not in ("", layer.wmts_style):
        raise invalid_parameter(
            "style",
            f"Unknown style {_show(style)} for layer {layer.name!r}: use {layer.wmts_style!r}",
        )
    variant = layer.on_grid(matrix_set)
    if variant is None:
        names = layer.grid_names
        use = repr(names[0]) if len(names) == 1 else f"one of {list(names)}"
        raise invalid_parameter(
            "tilematrixset",
            f"Unknown TileMatrixSet {_show(matrix_set)} for layer {layer.name!r}: use {use}",
        )
    layer = variant  # the layer on that TileMatrixSet: its grid and its bbox there
    grid = layer.grid
    z = grid.zoom_of(matrix)
    if z is None:
        raise invalid_parameter(
            "tilematrix", f"Unknown TileMatrix {_show(matrix)} in TileMatrixSet {grid.name!r}"
        )
    row_number = _integer("tilerow", row)
    col_number = _integer("tilecol", col)
    limits = grid.limits(z, layer.bbox)
    if not limits.min_row <= row_number <= limits.max_row:
        raise tile_out_of_range(
            "tilerow",
            f"TileRow {row_number} is out of range "
            f"[{limits.min_row}, {limits.max_row}] of TileMatrix {matrix!r}",
        )
    if not limits.min_col <= col_number <= limits.max_col:
        raise tile_out_of_range(
            "tilecol",
            f"TileCol {col_number} is out of range "
            f"[{limits.min_col}, {limits.max_col}] of TileMatrix {matrix!r}",
        )
    values = []
    for dimension in layer.dimensions:
        value = dimensions.get(dimension.name.lower(), "") or dimension.default
        if value not in dimension.values:
            raise invalid_parameter(
                dimension.name,
                f"Unknown value {_show(value)} for dimension "
                f"{dimension.name!r}: use one of {list(dimension.values)}",
            )
        values.append(value)
    return TileRequest(
        layer=layer,
        style=layer.wmts_style,
        dimensions=tuple(values),
        coord=TileCoord(z, row_number, col_number),
    )


def _required(params: Mapping[str, str], name: str, allow_empty: bool = False) -> str:
    value = params.get(name)
    if value is None or (value == "" and not allow_empty):
        raise missing_parameter(name)
    return value


def _layer(config: Config, name: str) -> Layer:
    layer = config.layers.get(name)
    if layer is None:
        raise invalid_parameter("layer", f"Unknown layer {_show(name)}")
    return layer


def _integer(name: str, value: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise invalid_parameter(name, f"{name} must be an integer, got {_show(value)}")
    return int(value)
