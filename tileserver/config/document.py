"""The YAML document's shape: every key, its type, default and meaning, once.

Validation (`tileserver.config.build`), the published JSON Schema
(`tileserver/config.schema.json`, written by `python -m tileserver.config.schema`) and
`--dump-config` (`tileserver.config.dump`) all come from these pydantic models.

Why pydantic models beside the frozen dataclasses of `model.py`, and not pydantic
dataclasses for both: the document is shaped as TileCloud-chain users write it (nested
`provider.contact.info.address`, a `grid` name, TCC keys that do nothing here), while the
code works on resolved values (a `Grid` object, one `Layer` per grid, `Provider` flat).
Pydantic validates the first in one pass with every error's location and generates its
JSON Schema; the second stays plain slotted dataclasses, free of pydantic in the hot path,
used as before by every module. `build.py` is the one place that maps one onto the other.

Types are strict (no "yes" for true, no "8" for 8) except that a number is accepted where
text is expected, as YAML users write `version: 1.3` or `postal_code: 3000`. Checks that
need other sections (a layer's grid) or a message of their own live in `build.py`; enums
checked there are still published in the schema (`json_schema_extra`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from tileserver.config.doc_fields import Flag, Int, Number, Section, Text, enum, no_effect
from tileserver.config.layer_document import CacheDoc, GridDoc, LayerDoc


class GenerationDoc(Section):
    default_cache: Text | None = None
    default_layers: list[Text] | Text | None = Field(
        None, description="The layers generate_tiles renders without --layer (default: all)"
    )
    number_process: Int | None = Field(None, ge=1)
    queue: Text | None = Field(None, json_schema_extra=enum("sqs", "redis"))
    error_file: Text | None = Field(None, description="Where failed metatiles are listed")
    maxconsecutive_errors: Int = Field(
        10, ge=1, description="generate_tiles stops after this many failed metatiles in a row"
    )
    authorised_user: Any = no_effect()
    log_format: Any = no_effect()


class AdminDoc(Section):
    enabled: Flag = False
    token_env: Text = "TILESERVER_ADMIN_TOKEN"


class ServerDoc(Section):
    host: Text = "127.0.0.1"
    port: Int = Field(8080, ge=0, le=65535)
    workers: Int = Field(1, ge=1)
    render_processes: Int | None = Field(None, ge=1)
    url: Text | None = None
    memory_cache_mb: Int = Field(256, ge=1)
    hot_cache_mb: Int = Field(32, ge=0)
    hot_cache_max_age: Number = Field(2.0, gt=0)
    render_timeout: Number = Field(60.0, gt=0)
    log_format: Text = Field("text", json_schema_extra=enum("text", "json"))
    access_log: Flag = True
    metrics: Flag = True
    shutdown_timeout: Number = Field(30.0, gt=0)
    admin: AdminDoc = AdminDoc()
    tile_cache: Text | None = Field(
        None,
        description="The on-demand cache when both `memcached` and `redis_cache` are set",
        json_schema_extra=enum("memcached", "redis"),
    )
    # TileCloud-chain's own server, without effect here
    admin_footer: Any = no_effect()
    admin_footer_classes: Any = no_effect()
    admin_path: Any = no_effect()
    allowed_arguments: Any = no_effect()
    allowed_commands: Any = no_effect()
    cache: Any = no_effect()
    expires: Any = no_effect()
    geoms_redirect: Any = no_effect()
    layers: Any = no_effect()
    predefined_commands: Any = no_effect()
    static_allow_extension: Any = no_effect()
    static_path: Any = no_effect()
    wmts_path: Any = no_effect()
    mapcache_base: Any = no_effect()
    mapcache_headers: Any = no_effect()


class MemcachedDoc(Section):
    servers: list[Text] | Text = Field(description="'host:port' of each server")
    prefix: Text = "tileserver/"
    timeout: Number = Field(1.0, gt=0)
    pool_size: Int = Field(8, ge=1)
    retry_interval: Number = Field(2.0, gt=0)
    lock_timeout: Number = Field(
        60.0, gt=0, description="Seconds a request waits at most for another process's "
        "render of its metatile, then renders it itself",
    )  # fmt: skip
    lock_lease: Number = Field(
        5.0, gt=0, description="Seconds a render lock lives unless its holder renews it (it "
        "does while the render runs): a lock whose holder died is gone this soon",
    )  # fmt: skip


class RedisCacheDoc(Section):
    """Redis as the on-demand tile cache: one of `url`, `servers` or `sentinels`
    (TileCloud-chain's names for its Redis: url, sentinels, service_name, db)."""

    url: Text = Field("", description="redis://[:password@]host[:port][/db], rediss://, unix://")
    servers: list[Text] | Text = Field(
        default_factory=list, description="'host:port' of several Redis (consistent hashing)"
    )
    sentinels: list[Text | list[Text | Int]] = Field(
        default_factory=list,
        description="Redis Sentinel: 'host:port' or [host, port] (TileCloud-chain's)",
    )
    service_name: Text = Field("mymaster", description="The master's name for the sentinels")
    db: Int = Field(0, ge=0, description="With servers or sentinels (a url names its own)")
    password: Text = Field("", description="With servers or sentinels")
    prefix: Text = "tileserver/"
    timeout: Number = Field(1.0, gt=0)
    pool_size: Int = Field(8, ge=1)
    retry_interval: Number = Field(2.0, gt=0)
    lock_timeout: Number = Field(
        60.0, gt=0, description="Seconds a request waits at most for another process's "
        "render of its metatile, then renders it itself",
    )  # fmt: skip
    lock_lease: Number = Field(
        5.0, gt=0, description="Seconds a render lock lives unless its holder renews it (it "
        "does while the render runs): a lock whose holder died is gone this soon",
    )  # fmt: skip


class MetadataDoc(Section):
    title: Text = "tileserver"
    abstract: Text = ""
    keywords: list[Text] | Text = Field(default_factory=list)
    fees: Text = "none"
    access_constraints: Text = "none"
    servicetype: Text | None = Field(None, description="WMTS's is always 'OGC WMTS'")


class PhoneDoc(Section):
    voice: Text = ""
    fax: Text = ""


class AddressDoc(Section):
    delivery: Text = ""
    city: Text = ""
    area: Text = ""
    postal_code: Text = ""
    country: Text = ""
    email: Text = ""


class ContactInfoDoc(Section):
    phone: PhoneDoc = PhoneDoc()
    address: AddressDoc = AddressDoc()


class ContactDoc(Section):
    name: Text = ""
    position: Text = ""
    info: ContactInfoDoc = ContactInfoDoc()


class ProviderDoc(Section):
    name: Text = ""
    url: Text = ""
    contact: ContactDoc = ContactDoc()


class S3CostDoc(Section):
    put: Number = Field(0.005, ge=0, description="$ per 1000 PUT requests")
    get: Number = Field(0.0004, ge=0, description="$ per 1000 GET requests")
    storage: Number = Field(0.023, ge=0, description="$ per GB and month")
    download: Number = Field(0.09, ge=0, description="$ per GB sent")


class SqsCostDoc(Section):
    request: Number = Field(0.40, ge=0, description="$ per million requests")


class CostDoc(Section):
    metatile_generation_time: Number = Field(30.0, ge=0, description="ms")
    tile_generation_time: Number = Field(30.0, ge=0, description="ms")
    tileonly_generation_time: Number = Field(60.0, ge=0, description="ms")
    tile_size: Number = Field(20.0, ge=0, description="KiB")
    requests_per_month: Number = Field(10_000_000.0, ge=0, description="Per layer")
    request_per_layers: Number | None = Field(
        None, ge=0, description="TileCloud-chain's name of requests_per_month"
    )
    s3: S3CostDoc = S3CostDoc()
    sqs: SqsCostDoc = SqsCostDoc()
    cloudfront: Any = no_effect()


class PostgresqlDoc(Section):
    connection: Text = ""
    max_pending_minutes: Any = no_effect()
    sqlalchemy_url: Any = no_effect("TileCloud-chain's PostgreSQL job queue (not offered)")


class UpstreamDoc(Section):
    connections_per_host: Int = Field(8, ge=1)
    retry_backoff: Number = Field(0.5, ge=0)


class SqsDoc(Section):
    queue: Text
    errors_queue: Text | None = Field(None, description="Default: '<queue>-errors'")
    region: Text = "eu-west-1"
    endpoint_url: Text = ""
    visibility_timeout: Int = Field(300, ge=1, le=43200)
    max_tries: Int = Field(5, ge=1)
    counts_delay: Number = Field(60.0, ge=0)


class SnsDoc(Section):
    topic: Text
    region: Text | None = Field(None, description="Default: the topic ARN's")
    endpoint_url: Text = ""


class RedisDoc(Section):
    url: Text
    stream: Text = "tileserver-jobs"
    group: Text = "tileserver"
    claim_timeout: Number = Field(300.0, gt=0)
    max_tries: Int = Field(5, ge=1)
    timeout: Number = Field(5.0, gt=0)
    # TileCloud-chain's Redis queue, without effect here
    sentinels: Any = no_effect()
    service_name: Any = no_effect()
    socket_timeout: Any = no_effect()
    db: Any = no_effect()
    queue: Any = no_effect()
    max_retries: Any = no_effect()
    pending_timeout: Any = no_effect()
    max_errors_age: Any = no_effect()
    max_errors_nb: Any = no_effect()
    expiration: Any = no_effect()
    prefix: Any = no_effect()
    pending_count: Any = no_effect()
    pending_max_count: Any = no_effect()
    connection_kwargs: Any = no_effect()
    sentinel_kwargs: Any = no_effect()


class MapcacheDoc(Section):
    """TileCloud-chain's `mapcache` section; its Memcached becomes `memcached.servers`."""

    memcache_host: Text | None = None
    memcache_port: Int | None = Field(None, ge=1, le=65535)
    config_file: Any = no_effect("generate_controller --mapcache-config-file says where")
    location: Any = no_effect()


class Document(Section):
    """A tileserver configuration (TileCloud-chain's vocabulary)."""

    model_config = ConfigDict(title="tileserver configuration")

    grids: dict[str, GridDoc]
    caches: dict[str, CacheDoc] = Field(default_factory=dict)
    layer_default: dict[str, Any] | None = Field(
        None, description="Keys merged into every layer (each layer's own keys win)"
    )
    layers: dict[str, LayerDoc]
    defaults: Any = Field(None, description="The home of YAML anchors; read through them")
    generation: GenerationDoc = GenerationDoc()
    server: ServerDoc = ServerDoc()
    memcached: MemcachedDoc | None = None
    redis_cache: RedisCacheDoc | None = None
    metadata: MetadataDoc = MetadataDoc()
    provider: ProviderDoc = ProviderDoc()
    cost: CostDoc = CostDoc()
    postgresql: PostgresqlDoc = PostgresqlDoc()
    upstream: UpstreamDoc = UpstreamDoc()
    sqs: SqsDoc | None = None
    sns: SnsDoc | None = None
    redis: RedisDoc | None = None
    mapcache: MapcacheDoc | None = None
    queue_store: Text | None = Field(
        None, description="TileCloud-chain's name of generation.queue",
        json_schema_extra=enum("redis", "sqs"),
    )  # fmt: skip
    apache: Any = no_effect()
    openlayers: Any = no_effect()
    process: Any = no_effect()
    logging: Any = no_effect()
    authentication: Any = no_effect()
