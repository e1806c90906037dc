"""The configuration as the code uses it: frozen dataclasses, resolved and cross-checked.

Built from the YAML document (`document.py`) by `build.py`; nothing else makes them from
a file. Plain slotted dataclasses: the hot path reads them on every request.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tileserver.grid import Grid
from tileserver.types import BBox

# Names that appear in URLs and cache keys.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:+\-]+$")
_WMTS_PARAMETERS = {
    "service",
    "request",
    "version",
    "layer",
    "style",
    "format",
    "tilematrixset",
    "tilematrix",
    "tilerow",
    "tilecol",
    "i",
    "j",
    "infoformat",
}

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
# PNG at zlib level 1, like MapCache's "PNG" format (compression "fast"): the same pixels
# as level 6 for about 15 % more bytes, and half the encoding time, which is most of the
# cost of a metatile (benchmarks/RESULTS.md, "Where a cold metatile's time goes").
DEFAULT_OUTPUT_FORMAT = {"png": "png:z=1", "jpeg": "jpeg85", "jpg": "jpeg85"}
# REST extensions of GetFeatureInfo formats; others use their subtype's letters.
INFO_EXTENSIONS = {
    "text/html": "html",
    "text/plain": "txt",
    "text/xml": "xml",
    "application/xml": "xml",
    "application/vnd.ogc.gml": "gml",
    "application/vnd.ogc.gml/3.1.1": "gml3",
    "application/json": "json",
    "application/geo+json": "geojson",
}
LAYER_TYPES = ("mapnik", "wms")
FUTURE_LAYER_TYPES: tuple[str, ...] = ()
WMS_VERSIONS = ("1.1.1", "1.3.0")
DEFAULT_INFO_FORMATS = ("application/vnd.ogc.gml",)
CACHE_TYPES = ("filesystem", "s3", "mbtiles", "geopackage", "pmtiles")
SINGLE_FILE_CACHES = ("mbtiles", "geopackage")  # `file` (one SQLite file) or `folder`
WEB_MERCATOR_CACHES = ("mbtiles", "pmtiles")  # whose tiles are addressed by Web Mercator z/x/y
TILE_CACHES = ("memcached", "redis")  # the on-demand cache: a `memcached` or `redis_cache` section
MISSING_TILE = ("render", "no_content", "transparent")
LOG_FORMATS = ("text", "json")
QUEUE_TYPES = ("sqs", "redis")  # the queues of distributed generation (generate_tiles --role)


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    values: tuple[str, ...]
    default: str
    generate: tuple[str, ...] = ()  # what generate_tiles renders; () = the default only

    @property
    def generated(self) -> tuple[str, ...]:
        return self.generate or (self.default,)


@dataclass(frozen=True, slots=True)
class EmptyTile:
    """An empty tile: recognised by its size in bytes and the SHA-1 of its bytes
    (TileCloud-chain's), and, with `color`, by its pixels: a tile all of that one colour
    whatever its bytes (see tileserver.uniform_tiles)."""

    size: int | None
    hash: str | None
    color: tuple[int, int, int, int] | None = None  # RGBA, straight alpha
    # Where `color` comes from when the file gives only size and hash: the uniform tile
    # that hash is of, e.g. "a transparent 256x256 tile, PNG, zlib level 6".
    identified: str = ""


@dataclass(frozen=True, slots=True)
class LayerGeom:
    """One entry of a layer's `geoms` (TileCloud-chain's): where a generation without an
    explicit area renders, at the levels whose resolution is within [min_resolution,
    max_resolution]. A GeoJSON or WKT `file`, or an `sql` select list run on PostGIS
    as `SELECT ST_AsBinary(geom) FROM (SELECT <sql>) AS g`; in the grid's CRS, read
    when a generation starts, not here."""

    file: Path | None = None
    sql: str | None = None
    connection: str = ""  # libpq connection string; "" = libpq's PG* environment variables
    min_resolution: float | None = None
    max_resolution: float | None = None

    def applies_to(self, resolution: float) -> bool:
        return (self.min_resolution is None or resolution >= self.min_resolution) and (
            self.max_resolution is None or resolution <= self.max_resolution
        )


@dataclass(frozen=True, slots=True)
class WmsSource:
    """Where a `type: wms` layer gets its images: one GetMap per metatile (with its
    buffer) and, for `query_layers`, GetFeatureInfo forwarded for a tile's pixel."""

    url: str
    layers: str  # the WMS LAYERS parameter, comma-separated
    version: str = "1.1.1"  # or 1.3.0 (axis order of the CRS, CRS= instead of SRS=)
    params: tuple[tuple[str, str], ...] = ()  # extra GetMap parameters (STYLES, TRANSPARENT...)
    headers: tuple[tuple[str, str], ...] = ()
    generate_salt: bool = False  # a random SALT parameter busts caches in front of the WMS
    timeout: float = 30.0  # seconds per upstream request
    retries: int = 2  # more attempts after a failed request, with exponential backoff
    query_layers: str = ""  # QUERY_LAYERS of GetFeatureInfo; "" = not queryable
    info_formats: tuple[str, ...] = ()  # GetFeatureInfo formats, advertised in Capabilities


@dataclass(frozen=True, slots=True)
class LayerCost:
    """A layer's own `cost` figures (TileCloud-chain's); None: the top-level one."""

    tileonly_generation_time: float | None = None
    tile_generation_time: float | None = None
    metatile_generation_time: float | None = None
    tile_size: float | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    type: str
    title: str
    grid: Grid
    bbox: BBox  # in the grid's CRS
    mapfile: Path | None
    meta: bool
    meta_size: int
    meta_buffer: int
    mime_type: str
    extension: str
    output_format: str  # the renderer's encoder name, e.g. Mapnik's 'png', 'png32', 'jpeg85'
    wmts_style: str
    dimensions: tuple[Dimension, ...]
    expires_hours: float
    min_resolution_seed: float | None
    cache: str | None
    abstract: str = ""
    missing_tile: str = "render"  # a pre-generated level's tile absent from the store
    empty_tile_detection: EmptyTile | None = None
    empty_metatile_detection: EmptyTile | None = None
    geoms: tuple[LayerGeom, ...] = ()  # limits generation; empty: the whole bbox
    wms: WmsSource | None = None  # type: wms only
    # type: mapnik: libpq connection string whose host, port, dbname, user, password and
    # connect_timeout replace those of every PostGIS datasource of the style; "" keeps
    # the style's (and libpq's PG* environment variables for what it leaves out).
    connection: str = ""
    # Every grid of the layer (TileCloud-chain's `grids: [...]`) and the layer's bbox on
    # each, in that grid's CRS; `grid` and `bbox` are those of this variant, see on_grid().
    grids: tuple[Grid, ...] = ()
    grid_bboxes: tuple[BBox, ...] = ()
    px_buffer: float = 0.0  # pixels added around `geoms` when selecting tiles to generate
    data_buffer: int | None = None  # mapnik: the style's buffer-size, in pixels
    cost: LayerCost | None = None  # overrides of the top-level `cost` figures
    # RFC 5861, opt-in (0: off): seconds past `expires` a cached tile is still answered, at
    # once while one background render refreshes it (stale_while_revalidate), or when its
    # render fails (stale_if_error).
    stale_while_revalidate: int = 0
    stale_if_error: int = 0

    def __post_init__(self) -> None:
        if not self.grids:
            object.__setattr__(self, "grids", (self.grid,))
        if len(self.grid_bboxes) != len(self.grids):
            bboxes = tuple(self.bbox if g.name == self.grid.name else g.bbox for g in self.grids)
            object.__setattr__(self, "grid_bboxes", bboxes)

    @property
    def grid_names(self) -> tuple[str, ...]:
        return tuple(grid.name for grid in self.grids)

    def on_grid(self, name: str) -> Layer | None:
        """This layer on its grid `name` (the same layer, another TileMatrixSet), or None
        when the layer has no such grid."""
        if name == self.grid.name:
            return self
        for grid, bbox in zip(self.grids, self.grid_bboxes, strict=True):
            if grid.name == name:
                return dataclasses.replace(self, grid=grid, bbox=bbox)
        return None

    def variants(self) -> tuple[Layer, ...]:
        """The layer on each of its grids, the first one first."""
        return tuple(v for g in self.grids if (v := self.on_grid(g.name)) is not None)

    @property
    def queryable(self) -> bool:
        return self.wms is not None and bool(self.wms.query_layers)

    @property
    def ttl_seconds(self) -> int:
        """Memcached TTL and HTTP max-age."""
        return max(1, round(self.expires_hours * 3600))

    @property
    def cache_ttl_seconds(self) -> int:
        """The tile cache's TTL: the expiry, and the longer stale window after it."""
        return self.ttl_seconds + max(self.stale_while_revalidate, self.stale_if_error)

    @property
    def effective_meta_size(self) -> int:
        return self.meta_size if self.meta else 1

    def is_on_demand(self, z: int) -> bool:
        """True where level z is rendered on demand: finer than min_resolution_seed, or
        any level of a layer without a tile store."""
        if self.min_resolution_seed is None or self.cache is None:
            return True
        return self.grid.resolutions[z] < self.min_resolution_seed


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
    # A small in-process tier in front of Memcached (0: off). A tile is kept at most
    # hot_cache_max_age seconds and never beyond its layer's expiry, so a flush_all or an
    # --update shows everywhere within that time.
    hot_cache_mb: int = 0
    hot_cache_max_age: float = 10.0
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


def info_extension(info_format: str) -> str:
    """The file extension of a GetFeatureInfo format in REST URLs."""
    known = INFO_EXTENSIONS.get(info_format.lower())
    if known is not None:
        return known
    subtype = info_format.split(";")[0].rsplit("/", 1)[-1].rsplit("+", 1)[-1]
    return re.sub(r"[^a-z0-9]", "", subtype.lower()) or "info"
