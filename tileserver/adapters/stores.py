"""Builds the tile store a `caches` entry describes."""

from __future__ import annotations

from tileserver.config import CacheConfig, Config, Layer
from tileserver.protocols import TileStore
from tileserver.store_layout import Tileset, tileset_of


def bound_tileset(cache: CacheConfig, config: Config) -> Tileset | None:
    """The tileset of a single-tileset file (an MBTiles `file`, a PMTiles archive): that
    of the one layer using the cache (config refuses more), with its default dimension
    values; None when no layer uses it."""
    users: list[Layer] = [layer for layer in config.layers.values() if layer.cache == cache.name]
    if not users:
        return None
    layer = users[0]
    values = tuple(d.default for d in layer.dimensions)
    return tileset_of(layer.name, layer.wmts_style, values, layer.extension, layer.grid)


def store_for(cache: CacheConfig, config: Config) -> TileStore:
    if cache.type == "filesystem":
        from tileserver.adapters.filesystem_store import FilesystemStore

        return FilesystemStore(cache.folder)
    if cache.type in ("mbtiles", "geopackage"):
        from tileserver.adapters.geopackage_store import GeoPackageStore
        from tileserver.adapters.mbtiles_store import MBTilesStore

        location, single = cache.file or cache.folder, bool(cache.file)
        if cache.type == "geopackage":
            return GeoPackageStore(
                location, grids=config.grids, layers=config.layers, single_file=single
            )
        bound = bound_tileset(cache, config)
        return MBTilesStore(location, grids=config.grids, layers=config.layers,
                            single_file=single, bound=bound.key if bound else None)  # fmt: skip
    if cache.type == "pmtiles":
        from tileserver.adapters.pmtiles_store import PMTilesStore

        return PMTilesStore(cache.file or cache.url, bound_tileset(cache, config))
    from tileserver.adapters.s3_store import S3Store

    return S3Store(
        cache.bucket,
        cache.folder,
        endpoint_url=cache.endpoint_url,
        region=cache.region,
        cache_control=cache.cache_control,
    )
