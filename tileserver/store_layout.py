"""Tile store path layout: pure functions, no I/O.

Pre-generated tiles are stored as TileCloud-chain writes them, the WMTS RESTful layout:
`[folder/]1.0.0/{layer}/{style}/[{dimension values}/]{matrix set}/{matrix id}/{row}/{col}.{ext}`
(https://github.com/camptocamp/tilecloud-chain, WMTS 1.0.0 §10.2), where the matrix id is
the TileMatrix identifier (`grid.matrix_id(z)`: the zoom, or the resolution).

Stores address tiles by such slash-separated paths relative to their root (a folder, an
S3 bucket and prefix); `check_path` is the rule every store applies so that a path can
never reach outside that root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tileserver.grid import Grid

WMTS_VERSION = "1.0.0"


# --- the layout ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TilePath:
    """The parts of a tile path, in the order of `tile_path`'s arguments."""

    layer_name: str
    style: str
    dimension_values: tuple[str, ...]
    matrix_set: str
    matrix_id: str
    row: int
    col: int
    extension: str


@dataclass(frozen=True, slots=True)
class Tileset:
    """The tiles of one layer, style, dimension values, matrix set and extension: what
    one table of an MBTiles or GeoPackage file, or one PMTiles archive, holds."""

    # "1.0.0/osm/default/epsg3857": its tile paths are {prefix}/{matrix id}/{row}/{col}.{ext}
    prefix: str
    extension: str
    layer_name: str
    grid: Grid

    @property
    def key(self) -> str:
        """The file name of the tileset under a store's folder, without the suffix."""
        return f"{self.prefix}.{self.extension}"

    def path(self, z: int, row: int, col: int) -> str:
        return f"{self.prefix}/{self.grid.matrix_id(z)}/{row}/{col}.{self.extension}"


def tileset_of(layer_name: str, style: str, dimension_values: Sequence[str], extension: str,
               grid: Grid) -> Tileset:  # fmt: skip
    """The tileset of a layer's tiles with these dimension values."""
    prefix = tile_prefix("", layer_name, style, dimension_values, grid.name).rstrip("/")
    return Tileset(prefix, extension, layer_name, grid)


def _check_part(what: str, value: str) -> str:
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError(f"{what} {value!r} cannot be a path component")
    return value


def _folder(folder: str) -> str:
    folder = folder.strip("/")
    return f"{folder}/" if folder else ""


def tile_prefix(
    folder: str,
    layer_name: str,
    style: str,
    dimension_values: Sequence[str],
    matrix_set: str,
    matrix_id: str | None = None,
) -> str:
    """The prefix (ending with '/') of every tile of one matrix set, or of one of its matrices."""
    parts = [
        WMTS_VERSION,
        _check_part("layer", layer_name),
        _check_part("style", style),
        *(_check_part("dimension value", v) for v in dimension_values),
        _check_part("matrix set", matrix_set),
    ]
    if matrix_id is not None:
        parts.append(_check_part("matrix id", matrix_id))
    return _folder(folder) + "/".join(parts) + "/"


def tile_path(
    folder: str,
    layer_name: str,
    style: str,
    dimension_values: Sequence[str],
    matrix_set: str,
    matrix_id: str,
    row: int,
    col: int,
    extension: str,
) -> str:
    """The path of one tile; `folder` is '' for a store already rooted at the cache folder."""
    if row < 0 or col < 0:
        raise ValueError(f"negative tile row/column {row}/{col}")
    if not extension or not extension.isalnum():
        raise ValueError(f"invalid extension {extension!r}")
    prefix = tile_prefix(folder, layer_name, style, dimension_values, matrix_set, matrix_id)
    return f"{prefix}{row}/{col}.{extension}"


def _index(text: str) -> int | None:
    """A row or column written as `tile_path` writes it (no sign, no leading zero)."""
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    return int(text)


def parse_tile_path(folder: str, path: str) -> TilePath | None:
    """The parts of a path `tile_path` wrote under `folder`; None for any other path
    (a temporary file, a stray file, a path under another folder)."""
    prefix = _folder(folder)
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    # version, layer, style, [dimension values...], matrix set, matrix id, row, col.ext
    if len(parts) < 7 or parts[0] != WMTS_VERSION:
        return None
    if any(not p or p in (".", "..") or "\\" in p for p in parts):
        return None
    col_text, dot, extension = parts[-1].rpartition(".")
    row, col = _index(parts[-2]), _index(col_text)
    if not dot or row is None or col is None or not extension.isalnum():
        return None
    return TilePath(
        layer_name=parts[1],
        style=parts[2],
        dimension_values=tuple(parts[3:-4]),
        matrix_set=parts[-4],
        matrix_id=parts[-3],
        row=row,
        col=col,
        extension=extension,
    )


def check_path(path: str) -> str:
    """`path` when it is a relative path that stays under a store's root, else ValueError.

    Every store applies it, S3 included: some S3 servers normalise '..' in URLs.
    """
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"tile path {path!r} is not a relative path inside the store")
    if "\\" in path or "\0" in path:
        raise ValueError(f"tile path {path!r} contains a backslash or a NUL character")
    return path


def check_prefix(prefix: str) -> str:
    """`prefix` when every path it starts is inside the store ('' lists the whole store)."""
    # A prefix is valid when completing its last (partial) component gives a valid path.
    try:
        check_path(prefix + "x")
    except ValueError:
        raise ValueError(f"prefix {prefix!r} is not a relative path inside the store") from None
    return prefix
