"""The configuration: its YAML shape (`document`), its checks (`build`, `sections`,
`layers`), the objects the code uses (`model`), its JSON Schema (`schema`) and its dump
(`dump`). Importers use the names re-exported here."""

from __future__ import annotations

from tileserver.config.build import MergedDict, parse_config
from tileserver.config.layer_model import (
    DEFAULT_INFO_FORMATS,
    DEFAULT_OUTPUT_FORMAT,
    FORMATS,
    INFO_EXTENSIONS,
    LAYER_TYPES,
    MISSING_TILE,
    WMS_VERSIONS,
    Dimension,
    EmptyTile,
    Layer,
    LayerCost,
    LayerGeom,
    WmsSource,
    info_extension,
)
from tileserver.config.model import (
    CACHE_TYPES,
    DEFAULT_CAPABILITIES_FILE,
    LOG_FORMATS,
    QUEUE_TYPES,
    TILE_CACHES,
    AdminConfig,
    CacheConfig,
    Config,
    CostConfig,
    Generation,
    MemcachedConfig,
    Metadata,
    PostgresqlConfig,
    Provider,
    RedisCacheConfig,
    RedisConfig,
    S3Cost,
    ServerConfig,
    SnsConfig,
    SqsConfig,
    SqsCost,
    UpstreamConfig,
)

__all__ = [
    "CACHE_TYPES", "DEFAULT_CAPABILITIES_FILE", "DEFAULT_INFO_FORMATS", "DEFAULT_OUTPUT_FORMAT",
    "FORMATS", "INFO_EXTENSIONS", "LAYER_TYPES", "LOG_FORMATS", "MISSING_TILE", "QUEUE_TYPES",
    "TILE_CACHES", "WMS_VERSIONS", "AdminConfig", "CacheConfig", "Config", "CostConfig",
    "Dimension", "EmptyTile", "Generation", "Layer", "LayerCost", "LayerGeom",
    "MemcachedConfig", "MergedDict", "Metadata", "PostgresqlConfig", "Provider",
    "RedisCacheConfig", "RedisConfig", "S3Cost", "ServerConfig", "SnsConfig", "SqsConfig",
    "SqsCost", "UpstreamConfig", "WmsSource", "info_extension", "parse_config",
]  # fmt: skip
