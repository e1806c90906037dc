"""The configuration as the code uses it: frozen dataclasses, resolved and cross-checked.

Built from the YAML document (`document.py`) by `build.py`; nothing else makes them from
a file. Plain slotted dataclasses: the hot path reads them on every request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Names that appear in URLs and cache keys.
from tileserver.config.layer_model import Layer
from tileserver.grid import Grid

CACHE_TYPES = ("filesystem", "s3", "mbtiles", "geopackage", "pmtiles")
SINGLE_FILE_CACHES = ("mbtiles", "geopackage")  # `file` (one SQLite file) or `folder`
WEB_MERCATOR_CACHES = ("mbtiles", "pmtiles")  # whose tiles are addressed by Web Mercator z/x/y
TILE_CACHES = ("memcached", "redis")  # the on-demand cache: a `memcached` or `redis_cache` section
LOG_FORMATS = ("text", "json")
QUEUE_TYPES = ("sqs", "redis")  # the queues of distributed generation (generate_tiles --role)


DEFAULT_CAPABILITIES_FILE = "1.0.0/WMTSCapabilities.xml"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """A tile store declared under `caches`.

    `http_url` / `http_urls` are the public URLs of the store's root (the folder, or the
    bucket and folder), used in the static Capabilities `generate_controller` writes at
    `wmtscapabilities_file` (a path relative to that root).
    """

    name: str
    type: str
    folder: str = ""
    file: str = ""  # mbtiles, geopackage: one file for every layer; pmtiles: the archive
    url: str = ""  # pmtiles: the archive over HTTP (range requests), e.g. on S3 or a CDN
    bucket: str = ""
    region: str = ""
    endpoint_url: str = ""
    cache_control: str = ""
    http_url: str = ""
    http_urls: tuple[str, ...] = ()
    wmtscapabilities_file: str = DEFAULT_CAPABILITIES_FILE

    @property
    def public_urls(self) -> tuple[str, ...]:
        """The store's public URLs without a trailing '/': http_url, else http_urls."""
        urls = (self.http_url,) if self.http_url else self.http_urls
        return tuple(url.rstrip("/") for url in urls)


@dataclass(frozen=True, slots=True)
class MemcachedConfig:
    servers: tuple[tuple[str, int], ...]
    prefix: str = "tileserver/"
    timeout: float = 1.0  # seconds per Memcached round trip
    pool_size: int = 8  # connections per server
    retry_interval: float = 2.0  # seconds to skip Memcached after a failure
    lock_timeout: float = 60.0  # longest wait for another process's render of a metatile
    # A render lock is a lease of this many seconds, renewed while its render runs: the
    # lock of a holder that died (or of a paused Memcached) is gone this soon.
    lock_lease: float = 5.0


@dataclass(frozen=True, slots=True)
class RedisCacheConfig:
    """The `redis_cache` section: the on-demand tile cache in Redis (one of `url`,
    `servers` or `sentinels`), with Memcached's expiry, lock and outage rules."""

    url: str = ""  # redis://[:password@]host[:port][/db], rediss://, unix://
    servers: tuple[tuple[str, int], ...] = ()  # several Redis, keys spread by consistent hashing
    sentinels: tuple[tuple[str, int], ...] = ()  # Redis Sentinel, which names the master
    service_name: str = "mymaster"  # the master's name for the sentinels
    db: int = 0  # with servers or sentinels (a url names its own)
    password: str = ""  # with servers or sentinels
    prefix: str = "tileserver/"
    timeout: float = 1.0  # seconds per round trip
    pool_size: int = 8  # connections per server
    retry_interval: float = 2.0  # seconds to skip Redis after a failure
    lock_timeout: float = 60.0  # longest wait for another process's render of a metatile
    lock_lease: float = 5.0  # a render lock's lease, renewed while its render runs


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """`server.admin`: the token-protected /admin/ operations, off by default."""

    enabled: bool = False
    token_env: str = "TILESERVER_ADMIN_TOKEN"  # the environment variable holding the token


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    render_processes: int | None = None  # default: cores / workers
    url: str | None = None  # public base URL for Capabilities; default from each request
    memory_cache_mb: int = 256  # the embedded cache used when Memcached is absent
    # A small in-process tier in front of Memcached and the stores (0: off). A tile is
    # kept at most hot_cache_max_age seconds and never beyond its layer's expiry, so a
    # flush_all, an --update or an /admin/expire shows everywhere within that time.
    hot_cache_mb: int = 32
    hot_cache_max_age: float = 2.0
    render_timeout: float = 60.0
    log_format: str = "text"  # or json: one JSON object per line
    access_log: bool = True  # one line per request
    metrics: bool = True  # Prometheus metrics at /metrics
    shutdown_timeout: float = 30.0  # seconds SIGTERM leaves requests under way to finish
    admin: AdminConfig = AdminConfig()
    tile_cache: str | None = None  # memcached | redis: which one, when both sections are set


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """The `upstream` section: the HTTP client of `type: wms` layers."""

    connections_per_host: int = 8  # concurrent requests to one WMS host, per process
    retry_backoff: float = 0.5  # seconds before the first retry, doubled at each retry


@dataclass(frozen=True, slots=True)
class Generation:
    default_cache: str | None = None
    default_layers: tuple[str, ...] = ()
    number_process: int | None = None
    queue: str | None = None  # sqs | redis: the queue of --role master/worker (see Config.queue)
    error_file: str | None = None  # where generate_tiles lists failed metatiles
    maxconsecutive_errors: int = 10  # failed metatiles in a row before generate_tiles stops


@dataclass(frozen=True, slots=True)
class SqsConfig:
    """The `sqs` section (TileCloud-chain's): the SQS queue of distributed generation, and
    the queue where jobs that failed `max_tries` times go with their reason."""

    queue: str
    errors_queue: str  # default "<queue>-errors"
    region: str = "eu-west-1"
    endpoint_url: str = ""  # an SQS-compatible server (moto, ElasticMQ, LocalStack)
    visibility_timeout: int = 300  # seconds a received job stays hidden from other workers
    max_tries: int = 5  # failed deliveries of a job before it goes to errors_queue
    # Seconds the queue must look empty before `--role master --wait` calls a generation
    # finished: SQS's counts are approximate and lag by up to a minute.
    counts_delay: float = 60.0


@dataclass(frozen=True, slots=True)
class SnsConfig:
    """The `sns` section (TileCloud-chain's): the topic told when a generation is finished."""

    topic: str  # the topic's ARN
    region: str  # default: the ARN's
    endpoint_url: str = ""


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """The `redis` section: distributed generation over a Redis stream and consumer group."""

    url: str  # redis://[user:password@]host[:port][/db], rediss://... or unix://path
    stream: str = "tileserver-jobs"  # also the prefix of its companion keys
    group: str = "tileserver"
    claim_timeout: float = 300.0  # seconds before another worker claims an unfinished job
    max_tries: int = 5  # failed deliveries of a job before it goes to the error list
    timeout: float = 5.0  # seconds per Redis command


@dataclass(frozen=True, slots=True)
class S3Cost:
    """Prices of an S3 bucket, in dollars (default: AWS S3 Standard, us-east-1)."""

    put: float = 0.005  # per 1000 PUT requests
    get: float = 0.0004  # per 1000 GET requests
    storage: float = 0.023  # per GB stored for a month
    download: float = 0.09  # per GB sent to the Internet


@dataclass(frozen=True, slots=True)
class SqsCost:
    """Price of SQS requests, in dollars (default: AWS SQS standard queues)."""

    request: float = 0.40  # per million requests (a batch of up to 10 messages is one)


@dataclass(frozen=True, slots=True)
class CostConfig:
    """What `generate_controller --cost` estimates with (TileCloud-chain's `cost` figures)."""

    metatile_generation_time: float = 30.0  # ms to render one metatile
    tile_generation_time: float = 30.0  # ms to cut, encode and store one tile of a metatile
    tileonly_generation_time: float = 60.0  # ms to render one tile of a layer with meta: false
    tile_size: float = 20.0  # KiB, the average stored tile
    requests_per_month: float = 10_000_000.0  # tile requests one layer receives a month
    s3: S3Cost = S3Cost()
    sqs: SqsCost = SqsCost()

    def for_layer(self, layer: Layer) -> CostConfig:
        """These figures with the layer's own `cost` figures in place of the top-level ones."""
        if layer.cost is None:
            return self
        own = {k: v for k, v in dataclasses.asdict(layer.cost).items() if v is not None}
        return dataclasses.replace(self, **own)


@dataclass(frozen=True, slots=True)
class PostgresqlConfig:
    """The `postgresql` section: the default database of the layers' `geoms` queries."""

    connection: str = ""  # libpq connection string; "" = libpq's PG* environment variables


@dataclass(frozen=True, slots=True)
class Metadata:
    title: str = "tileserver"
    abstract: str = ""
    keywords: tuple[str, ...] = ()
    fees: str = "none"
    access_constraints: str = "none"


@dataclass(frozen=True, slots=True)
class Provider:
    name: str = ""
    url: str = ""
    contact_name: str = ""
    contact_position: str = ""
    phone_voice: str = ""
    phone_fax: str = ""
    delivery_point: str = ""
    city: str = ""
    area: str = ""
    postal_code: str = ""
    country: str = ""
    email: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    grids: Mapping[str, Grid]
    caches: Mapping[str, CacheConfig]
    layers: Mapping[str, Layer]
    generation: Generation = Generation()
    server: ServerConfig = ServerConfig()
    memcached: MemcachedConfig | None = None
    redis_cache: RedisCacheConfig | None = None
    metadata: Metadata = Metadata()
    provider: Provider = Provider()
    cost: CostConfig = CostConfig()
    postgresql: PostgresqlConfig = PostgresqlConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    sqs: SqsConfig | None = None
    sns: SnsConfig | None = None
    redis: RedisConfig | None = None
    source: Path | None = None
    # What check-config prints as warnings: TileCloud-chain keys without effect here...
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # The validated YAML document this was built from (--dump-config prints it).
    document: Any = field(default=None, compare=False, repr=False)

    @property
    def tile_cache(self) -> str | None:
        """The on-demand cache: `server.tile_cache`, else `memcached` or `redis`, whichever
        section is set (parse_config refuses both without `server.tile_cache`); None for
        the in-process cache."""
        if self.server.tile_cache is not None:
            return self.server.tile_cache
        if self.memcached is not None:
            return "memcached"
        return "redis" if self.redis_cache is not None else None

    @property
    def shared_cache(self) -> MemcachedConfig | RedisCacheConfig | None:
        """The section of the shared on-demand cache (`tile_cache`); None: in-process."""
        if self.tile_cache == "memcached":
            return self.memcached
        return self.redis_cache if self.tile_cache == "redis" else None

    @property
    def queue(self) -> str | None:
        """The queue of distributed generation: `generation.queue`, else `sqs` or `redis`,
        whichever is set (parse_config refuses both without `generation.queue`)."""
        if self.generation.queue is not None:
            return self.generation.queue
        return "sqs" if self.sqs is not None else "redis" if self.redis is not None else None
