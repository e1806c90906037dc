"""A reference model of WMTS 1.0.0 KVP and REST, written from the standard: what a
request means (its tile, its FeatureInfo, or an error), where that is known."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.fuzz.fuzz_files import INTEGER
from tileserver.config import FORMATS, Config, Layer, info_extension
from tileserver.types import TileCoord

# --- reference model: what a request means -----------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a correct server answers, where the request's meaning is known."""

    kind: str  # tile | info | capabilities | error
    layer: Layer | None = None
    coord: TileCoord | None = None
    pixel: tuple[int, int] | None = None


@dataclass(frozen=True)
class Sent:
    """One generated request: the bytes, the client's values (for the echo bound), and the
    expected outcome when the request's meaning is known."""

    request: bytes
    values: tuple[str, ...] = ()
    expect: Expect | None = None
    head: bool = False
    fresh: bool = False  # on a connection of its own (raw bytes may leave it unusable)

    def __repr__(self) -> str:
        kind = self.expect.kind if self.expect else "unknown"
        return f"Sent({self.request!r}, expect={kind})"


def _integer_in(text: str | None, low: int, high: int) -> bool:
    return text is not None and INTEGER.fullmatch(text) is not None and low <= int(text) <= high


def _tile_expect(
    layer: Layer,
    style: str | None,
    matrix_set: str | None,
    matrix: str | None,
    row: str | None,
    col: str | None,
    dimensions: Mapping[str, str],
) -> Expect:
    grid = layer.grid
    z = grid.zoom_of(matrix) if matrix is not None else None
    if style not in ("", layer.wmts_style) or matrix_set != grid.name or z is None:
        return Expect("error")
    limits = grid.limits(z, layer.bbox)
    if not (_integer_in(row, limits.min_row, limits.max_row)
            and _integer_in(col, limits.min_col, limits.max_col)):  # fmt: skip
        return Expect("error")
    for dimension in layer.dimensions:
        value = dimensions.get(dimension.name.lower(), "")
        if value and value not in dimension.values:
            return Expect("error")
    assert row is not None and col is not None
    return Expect("tile", layer, TileCoord(z, int(row), int(col)))


def _info_expect(
    tile: Expect, formats: Sequence[str], info_format: str | None, i: str | None, j: str | None
) -> Expect:
    layer = tile.layer
    if tile.kind != "tile" or layer is None or layer.wms is None or not layer.wms.query_layers:
        return Expect("error")
    size = layer.grid.tile_size
    if info_format not in formats or not (_integer_in(i, 0, size - 1)
                                          and _integer_in(j, 0, size - 1)):  # fmt: skip
        return Expect("error")
    assert i is not None and j is not None
    return Expect("info", layer, tile.coord, (int(i), int(j)))


def kvp_outcome(config: Config, items: Sequence[tuple[str, str]]) -> Expect:
    """The answer to KVP parameters (decoded) by WMTS 1.0.0: names case-insensitive
    (07-057r7, 8.1), the first of repeated parameters wins, values case-sensitive."""
    p: dict[str, str] = {}
    for name, value in items:
        p.setdefault(name.lower(), value)
    if p.get("service") != "WMTS":
        return Expect("error")
    if p.get("request") == "GetCapabilities":
        accept = p.get("acceptversions")
        ok = not accept or "1.0.0" in accept.split(",")
        return Expect("capabilities" if ok else "error")
    if p.get("request") not in ("GetTile", "GetFeatureInfo") or p.get("version") != "1.0.0":
        return Expect("error")
    layer = config.layers.get(p.get("layer", ""))
    if layer is None or p.get("format") != layer.mime_type:
        return Expect("error")
    names = ("style", "tilematrixset", "tilematrix", "tilerow", "tilecol")
    tile = _tile_expect(layer, *(p.get(n) for n in names), dimensions=p)
    if p.get("request") == "GetTile":
        return tile
    formats = layer.wms.info_formats if layer.wms else ()
    return _info_expect(tile, formats, p.get("infoformat"), p.get("i"), p.get("j"))


def rest_outcome(config: Config, path: str) -> Expect:
    """The answer to a (decoded) REST path relative to /wmts/1.0.0/ (07-057r7, 10.2)."""
    if path == "WMTSCapabilities.xml":
        return Expect("capabilities")
    segments = path.split("/")
    if len(segments) < 6 or "" in segments or "." not in segments[-1]:
        return Expect("error")
    last, _, extension = segments[-1].rpartition(".")
    layer = config.layers.get(segments[0])
    if layer is None:
        return Expect("error")
    count = 6 + len(layer.dimensions)
    dimensions = {d.name.lower(): v for d, v in zip(layer.dimensions, segments[2:], strict=False)}
    if len(segments) == count and FORMATS.get(extension) == layer.mime_type:
        return _tile_expect(layer, segments[1], *segments[-4:-1], last, dimensions)
    if len(segments) == count + 2:
        tile = _tile_expect(layer, segments[1], *segments[-6:-2], dimensions)
        formats = layer.wms.info_formats if layer.wms else ()
        info_format = {info_extension(f): f for f in formats}.get(extension)
        return _info_expect(tile, formats, info_format, last, segments[-2])
    return Expect("error")
