"""Builds the tile store a `caches` entry describes."""

from __future__ import annotations

from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.adapters.s3_store import S3Store
from tileserver.config import CacheConfig
from tileserver.protocols import TileStore


def store_for(cache: CacheConfig) -> TileStore:
    if cache.type == "filesystem":
        return FilesystemStore(cache.folder)
    return S3Store(
        cache.bucket,
        cache.folder,
        endpoint_url=cache.endpoint_url,
        region=cache.region,
        cache_control=cache.cache_control,
    )
