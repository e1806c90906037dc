"""Exports a layer's stored levels into one archive (`generate_controller --export-pmtiles`).

The tiles are listed level by level from the layer's tile store, sorted in the archive's
order (PMTiles wants its tiles by Hilbert tile id to be "clustered", readable with few
range requests), read in concurrent batches and handed to the writer, which makes the
archive appear whole or not at all. Web Mercator grids only: the archive's z/x/y are
Web Mercator's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tileserver.config import Layer
from tileserver.crs import bbox_to_wgs84
from tileserver.grid import web_mercator_zoom_offset
from tileserver.protocols import TileStore
from tileserver.store_layout import parse_tile_path, tile_prefix, tileset_of

READ_BATCH = 64  # tiles read from the store at once


class ArchiveWriter(Protocol):
    def add(self, z: int, x: int, y: int, data: bytes) -> None:
        """One tile, at Web Mercator z/x/y, in `order`."""
        ...

    def finish(
        self, extension: str, bounds: tuple[float, float, float, float], metadata: dict[str, Any]
    ) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ExportStats:
    tiles: int
    bytes: int
    levels: tuple[int, ...]  # the layer's levels (grid zooms) holding tiles


def archive_metadata(layer: Layer) -> dict[str, Any]:
    """The archive's JSON metadata: TileJSON-like names, and the tile paths it replaces."""
    values = tuple(d.default for d in layer.dimensions)
    tileset = tileset_of(layer.name, layer.wmts_style, values, layer.extension, layer.grid)
    return {
        "name": layer.title or layer.name,
        "description": layer.abstract,
        "type": "baselayer",
        "format": layer.extension,
        "tileserver": {"tileset": tileset.key},
    }


async def export_layer(
    layer: Layer,
    store: TileStore,
    zooms: Sequence[int],
    writer: ArchiveWriter,
    order: Callable[[int, int, int], int],
) -> ExportStats:
    """Writes the layer's tiles at `zooms` (grid levels) from store into writer; ValueError
    when the grid is not Web Mercator or no tile is stored."""
    offset = web_mercator_zoom_offset(layer.grid)
    if offset is None:
        raise ValueError(
            f"layer {layer.name}: grid {layer.grid.name!r} is not Web Mercator: a PMTiles archive "
            "holds Web Mercator tiles only"
        )
    values = tuple(d.default for d in layer.dimensions)
    found: list[tuple[int, int, int, int, str]] = []  # (order, z, x, y, path)
    for z in zooms:
        prefix = tile_prefix("", layer.name, layer.wmts_style, values, layer.grid.name,
                             layer.grid.matrix_id(z))  # fmt: skip
        async for path in store.list_paths(prefix):
            parsed = parse_tile_path("", path)
            if parsed is None or parsed.extension != layer.extension:
                continue
            zoom = z + offset
            found.append((order(zoom, parsed.col, parsed.row), zoom, parsed.col, parsed.row, path))
    if not found:
        raise ValueError(f"layer {layer.name}: no tile stored at levels {list(zooms)}")
    found.sort()
    written = size = 0
    levels: set[int] = set()
    try:
        for start in range(0, len(found), READ_BATCH):
            batch = found[start : start + READ_BATCH]
            tiles = await asyncio.gather(*(store.get(item[4]) for item in batch))
            for (_, zoom, x, y, _path), data in zip(batch, tiles, strict=True):
                if data is None:
                    continue  # deleted since it was listed
                writer.add(zoom, x, y, data)
                written, size = written + 1, size + len(data)
                levels.add(zoom - offset)
        box = bbox_to_wgs84(layer.bbox, layer.grid.srs)
        await asyncio.to_thread(writer.finish, layer.extension, box.as_tuple(),
                                archive_metadata(layer))  # fmt: skip
    except BaseException:
        writer.abort()
        raise
    return ExportStats(written, size, tuple(sorted(levels)))
