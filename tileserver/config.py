"""Configuration models and their validation.

`parse_config` turns the plain data of a YAML document into frozen dataclasses, in
stages as MapProxy does: types and required keys of every section first, then the
cross-references between sections (grids, caches, layers). Each stage reports every
mistake it finds, each message naming its YAML path, before the next stage runs.
Nothing here reads files except to check that the Mapnik and `geoms` files are
readable.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from tileserver.crs import crs_info
from tileserver.errors import ConfigError
from tileserver.grid import Grid
from tileserver.store_layout import check_path
from tileserver.types import BBox

T = TypeVar("T")

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
CACHE_TYPES = ("filesystem", "s3")
MISSING_TILE = ("render", "no_content", "transparent")
LOG_FORMATS = ("text", "json")
QUEUE_TYPES = ("sqs", "redis")  # the queues of distributed generation (generate_tiles --role)


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    values: tuple[str, ...]
    default: str


@dataclass(frozen=True, slots=True)
class EmptyTile:
    """A tile recognised as empty by its size in bytes and a hash of its bytes."""

    size: int
    hash: str


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

    @property
    def queryable(self) -> bool:
        return self.wms is not None and bool(self.wms.query_layers)

    @property
    def ttl_seconds(self) -> int:
        """Memcached TTL and HTTP max-age."""
        return max(1, round(self.expires_hours * 3600))

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
    lock_timeout: float = 60.0  # TTL of the render lock of a metatile


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
    metadata: Metadata = Metadata()
    provider: Provider = Provider()
    cost: CostConfig = CostConfig()
    postgresql: PostgresqlConfig = PostgresqlConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    sqs: SqsConfig | None = None
    sns: SnsConfig | None = None
    redis: RedisConfig | None = None
    source: Path | None = None

    @property
    def queue(self) -> str | None:
        """The queue of distributed generation: `generation.queue`, else `sqs` or `redis`,
        whichever is set (parse_config refuses both without `generation.queue`)."""
        if self.generation.queue is not None:
            return self.generation.queue
        return "sqs" if self.sqs is not None else "redis" if self.redis is not None else None


# --- the small validating reader ----------------------------------------------------------

_MISSING: Any = object()


class _Errors:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.messages.append(f"{path}: {message}")

    def raise_if_any(self) -> None:
        if self.messages:
            raise ConfigError(self.messages)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


class _Section:
    """Reads one YAML mapping, recording a message per wrong or missing key."""

    def __init__(
        self,
        path: str,
        data: Any,
        errors: _Errors,
        origin: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.errors = errors
        self.origin = origin or {}
        self.ok = isinstance(data, dict)
        if not self.ok:
            errors.add(path, f"expected a mapping, got {_describe(data)}")
        self.data: dict[str, Any] = data if self.ok else {}
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        suffix = f" (set in {self.origin[key]})" if key in self.origin else ""
        self.errors.add(self.where(key), message + suffix)

    def _get(self, key: str, default: Any, check: Callable[[Any], T | None], what: str) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                self.errors.add(self.where(key), "missing required key")
                return None
            return default
        value = self.data[key]
        checked = check(value)
        if checked is None:
            self.error(key, f"expected {what}, got {_describe(value)}")
            return None
        return checked

    def text(self, key: str, default: Any = _MISSING) -> Any:
        def check(v: Any) -> str | None:
            if isinstance(v, str):
                return v
            if isinstance(v, int | float) and not isinstance(v, bool):
                return str(v)
            return None

        return self._get(key, default, check, "a string")

    def integer(self, key: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        value = self._get(key, default, lambda v: v if type(v) is int else None, "an integer")
        if value is not None and value is not default and minimum is not None and value < minimum:
            self.error(key, f"must be at least {minimum}, got {value}")
            return None
        return value

    def number(self, key: str, default: Any = _MISSING, positive: bool = False) -> Any:
        value = self._get(
            key,
            default,
            lambda v: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None,
            "a number",
        )
        if value is not None and value is not default and positive and value <= 0:
            self.error(key, f"must be greater than 0, got {value:g}")
            return None
        return value

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(
            key, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def numbers(self, key: str, default: Any = _MISSING) -> Any:
        def check(v: Any) -> tuple[float, ...] | None:
            if not isinstance(v, list) or not v:
                return None
            if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
                return None
            return tuple(float(x) for x in v)

        return self._get(key, default, check, "a non-empty list of numbers")

    def texts(self, key: str, default: Any = _MISSING) -> Any:
        def check(v: Any) -> tuple[str, ...] | None:
            if isinstance(v, str):
                return (v,)
            if isinstance(v, list) and all(isinstance(x, str | int | float) for x in v):
                return tuple(str(x) for x in v)
            return None

        return self._get(key, default, check, "a list of strings")

    def text_mapping(self, key: str, default: Any = _MISSING) -> Any:
        """A mapping of names to scalar values, as sorted (name, text) pairs."""

        def check(v: Any) -> tuple[tuple[str, str], ...] | None:
            if not isinstance(v, dict):
                return None
            pairs = []
            for name, value in v.items():
                if not isinstance(value, str | int | float | bool) or isinstance(name, bool):
                    return None
                text = ("TRUE" if value else "FALSE") if isinstance(value, bool) else str(value)
                pairs.append((str(name), text))
            return tuple(sorted(pairs))

        return self._get(key, default, check, "a mapping of names to strings")

    def child_origin(self, key: str, data: Any) -> dict[str, str]:
        """Where the keys of a nested mapping came from (all from layer_default, or none)."""
        if key not in self.origin or not isinstance(data, dict):
            return {}
        return {str(k): self.origin[key] for k in data}

    def section(self, key: str, required: bool = False) -> _Section | None:
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                self.errors.add(self.where(key), "missing required section")
            return None
        data = self.data[key]
        return _Section(self.where(key), data, self.errors, self.child_origin(key, data))

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def finish(self) -> None:
        """Reports the keys that no reader asked for (typos, unsupported options)."""
        for key in self.data:
            if key in self.seen:
                continue
            hint = difflib.get_close_matches(str(key), sorted(self.seen), n=1)
            did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
            self.error(
                str(key),
                f"unknown key{did_you_mean} (allowed: {', '.join(sorted(self.seen))})",
            )


def _items(section: _Section | None) -> Iterator[tuple[str, Any]]:
    if section is None or not section.ok:
        return
    for name, value in section.data.items():
        section.seen.add(name)
        yield str(name), value


def _check_name(errors: _Errors, path: str, name: str) -> bool:
    if not _NAME_RE.match(name):
        errors.add(path, f"invalid name {name!r}: use letters, digits, '_', '-' and '.'")
        return False
    return True


def _bbox(section: _Section, key: str, default: Any = _MISSING) -> BBox | None:
    values = section.numbers(key, default)
    if values is None or values is default:
        return values
    if len(values) != 4:
        section.error(key, f"expected 4 numbers [minx, miny, maxx, maxy], got {len(values)}")
        return None
    try:
        return BBox(*values)
    except ValueError:
        section.error(key, f"minx must be < maxx and miny < maxy, got {list(values)}")
        return None


def _config_path(raw: str, base_dir: Path) -> Path:
    """A path of the configuration: '~' expanded, relative to the config file's folder."""
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else base_dir / path


def _unreadable(path: Path) -> str | None:
    """Why path is not a readable file, or None when it is one."""
    if path.is_file() and os.access(path, os.R_OK):
        return None
    return "no such file" if not path.exists() else "not a readable file"


# --- sections ------------------------------------------------------------------------------


def _parse_grid(name: str, s: _Section) -> Grid | None:
    resolutions = s.numbers("resolutions")
    bbox = _bbox(s, "bbox")
    srs = s.text("srs")
    tile_size = s.integer("tile_size", 256, minimum=1)
    matrix_identifier = s.text("matrix_identifier", "zoom")
    unit = s.text("unit", None)
    s.finish()
    ok = True
    if resolutions is not None:
        if any(r <= 0 for r in resolutions):
            s.error("resolutions", "resolutions must be greater than 0")
            ok = False
        elif any(a <= b for a, b in itertools.pairwise(resolutions)):
            s.error("resolutions", "resolutions must be sorted from the largest to the smallest")
            ok = False
    if matrix_identifier not in (None, "zoom", "resolution"):
        s.error("matrix_identifier", f"expected 'zoom' or 'resolution', got {matrix_identifier!r}")
        ok = False
    info = None
    if srs is not None:
        try:
            info = crs_info(srs)
        except ValueError:
            s.error("srs", f"unknown CRS {srs!r} (expected e.g. 'EPSG:3857')")
    if unit is not None and info is not None:
        expected = "degrees" if info.meters_per_unit != 1.0 else "m"
        if unit not in (expected, "degree" if expected == "degrees" else "meters"):
            s.error("unit", f"{srs} is in {expected}, not {unit!r}")
            ok = False
    if not ok or bbox is None or info is None or None in (resolutions, srs, tile_size):
        return None
    return Grid(
        name=name,
        srs=srs,
        bbox=bbox,
        resolutions=resolutions,
        tile_size=tile_size,
        matrix_identifier=matrix_identifier,
        meters_per_unit=info.meters_per_unit,
        yx_axis_order=info.yx_axis_order,
        crs_urn=info.urn,
    )


def _parse_cache(name: str, s: _Section) -> CacheConfig | None:
    kind = s.text("type")
    if kind is None:
        s.finish()
        return None
    if kind not in CACHE_TYPES:
        s.error("type", f"unknown cache type {kind!r} (supported: {', '.join(CACHE_TYPES)})")
        return None
    values: dict[str, Any] = {"name": name, "type": kind}
    if kind == "filesystem":
        values["folder"] = s.text("folder")
    else:
        values["bucket"] = s.text("bucket")
        values["folder"] = s.text("folder", "")
        values["region"] = s.text("region", "")
        values["endpoint_url"] = s.text("endpoint_url", "")
        values["cache_control"] = s.text("cache_control", "")
    values["http_url"] = s.text("http_url", "")
    values["http_urls"] = s.texts("http_urls", ())
    for key, urls in (("http_url", (values["http_url"],)), ("http_urls", values["http_urls"])):
        for url in urls or ():
            if url and not re.match(r"^https?://[^/]", url):
                s.error(key, f"expected an http:// or https:// URL, got {url!r}")
                values[key] = None
    # TileCloud-chain wrote it with a leading '/'; it is relative to the store's root.
    capabilities_file = s.text("wmtscapabilities_file", DEFAULT_CAPABILITIES_FILE)
    if capabilities_file is not None:
        capabilities_file = capabilities_file.lstrip("/")
        try:
            check_path(capabilities_file)
        except ValueError:
            s.error(
                "wmtscapabilities_file",
                f"must be a relative path inside the cache, got {capabilities_file!r}",
            )
            capabilities_file = None
    values["wmtscapabilities_file"] = capabilities_file
    s.finish()
    if None in values.values():
        return None
    return CacheConfig(**values)


def _parse_memcached(s: _Section) -> MemcachedConfig | None:
    servers_raw = s.texts("servers")
    prefix = s.text("prefix", "tileserver/")
    timeout = s.number("timeout", 1.0, positive=True)
    pool_size = s.integer("pool_size", 8, minimum=1)
    retry_interval = s.number("retry_interval", 2.0, positive=True)
    lock_timeout = s.number("lock_timeout", 60.0, positive=True)
    s.finish()
    servers: list[tuple[str, int]] = []
    for i, text in enumerate(servers_raw or ()):
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            s.errors.add(f"{s.where('servers')}[{i}]", f"expected 'host:port', got {text!r}")
            continue
        servers.append((host.strip("[]"), int(port)))
    if prefix is not None and (len(prefix) > 100 or not _VALUE_RE.match(prefix.replace("/", "_"))):
        s.error("prefix", "must be at most 100 letters, digits or '_-.:/' characters")
        return None
    if not servers or None in (timeout, pool_size, retry_interval, lock_timeout, prefix):
        return None
    return MemcachedConfig(
        servers=tuple(servers),
        prefix=prefix,
        timeout=timeout,
        pool_size=pool_size,
        retry_interval=retry_interval,
        lock_timeout=lock_timeout,
    )


def _parse_server(s: _Section | None) -> ServerConfig | None:
    if s is None:
        return ServerConfig()
    values = {
        "host": s.text("host", "127.0.0.1"),
        "port": s.integer("port", 8080, minimum=0),
        "workers": s.integer("workers", 1, minimum=1),
        "render_processes": s.integer("render_processes", None, minimum=1),
        "url": s.text("url", None),
        "memory_cache_mb": s.integer("memory_cache_mb", 256, minimum=1),
        "hot_cache_mb": s.integer("hot_cache_mb", 0, minimum=0),
        "hot_cache_max_age": s.number("hot_cache_max_age", 10.0, positive=True),
        "render_timeout": s.number("render_timeout", 60.0, positive=True),
        "log_format": s.text("log_format", "text"),
        "access_log": s.flag("access_log", True),
        "metrics": s.flag("metrics", True),
        "shutdown_timeout": s.number("shutdown_timeout", 30.0, positive=True),
        "admin": _parse_admin(s.section("admin")),
    }
    s.finish()
    if values["log_format"] is not None and values["log_format"] not in LOG_FORMATS:
        s.error(
            "log_format", f"expected one of {', '.join(LOG_FORMATS)}, got {values['log_format']!r}"
        )
        return None
    if values["port"] is not None and values["port"] > 65535:
        s.error("port", f"must be at most 65535, got {values['port']}")
        return None
    if values["url"] is not None and not re.match(r"^https?://", values["url"]):
        s.error("url", f"expected an http:// or https:// URL, got {values['url']!r}")
        return None
    required = ("host", "port", "workers", "memory_cache_mb", "hot_cache_mb", "hot_cache_max_age",
                "render_timeout", "log_format",
                "access_log", "metrics", "shutdown_timeout", "admin")  # fmt: skip
    if any(values[k] is None for k in required):
        return None
    return ServerConfig(**values)


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _parse_admin(s: _Section | None) -> AdminConfig | None:
    """`server.admin`; the token itself is read from the environment by the server."""
    if s is None:
        return AdminConfig()
    enabled = s.flag("enabled", False)
    token_env = s.text("token_env", "TILESERVER_ADMIN_TOKEN")
    s.finish()
    if token_env is not None and not _ENV_NAME_RE.match(token_env):
        s.error("token_env", f"expected the name of an environment variable, got {token_env!r}")
        return None
    if enabled is None or token_env is None:
        return None
    return AdminConfig(enabled=enabled, token_env=token_env)


def _parse_metadata(s: _Section | None) -> Metadata:
    if s is None:
        return Metadata()
    metadata = Metadata(
        title=s.text("title", "tileserver"),
        abstract=s.text("abstract", ""),
        keywords=s.texts("keywords", ()),
        fees=s.text("fees", "none"),
        access_constraints=s.text("access_constraints", "none"),
    )
    s.raw("servicetype")  # TileCloud-chain writes it; WMTS says "OGC WMTS" anyway
    s.finish()
    return metadata


def _parse_provider(s: _Section | None) -> Provider:
    if s is None:
        return Provider()
    values: dict[str, Any] = {"name": s.text("name", ""), "url": s.text("url", "")}
    contact = s.section("contact")
    if contact is not None:
        values["contact_name"] = contact.text("name", "")
        values["contact_position"] = contact.text("position", "")
        info = contact.section("info")
        if info is not None:
            phone = info.section("phone")
            if phone is not None:
                values["phone_voice"] = phone.text("voice", "")
                values["phone_fax"] = phone.text("fax", "")
                phone.finish()
            address = info.section("address")
            if address is not None:
                for key, field_name in (
                    ("delivery", "delivery_point"),
                    ("city", "city"),
                    ("area", "area"),
                    ("postal_code", "postal_code"),
                    ("country", "country"),
                    ("email", "email"),
                ):
                    values[field_name] = address.text(key, "")
                address.finish()
            info.finish()
        contact.finish()
    s.finish()
    return Provider(**{k: ("" if v is None else v) for k, v in values.items()})


def _parse_generation(s: _Section | None) -> Generation:
    if s is None:
        return Generation()
    generation = Generation(
        default_cache=s.text("default_cache", None),
        default_layers=s.texts("default_layers", ()) or (),
        number_process=s.integer("number_process", None, minimum=1),
        queue=s.text("queue", None),
    )
    s.finish()
    if generation.queue is not None and generation.queue not in QUEUE_TYPES:
        s.error("queue", f"expected one of {', '.join(QUEUE_TYPES)}, got {generation.queue!r}")
    return generation


_SQS_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")  # SQS's rule for standard queues
_SNS_ARN_RE = re.compile(r"^arn:[^:]+:sns:([^:]*):[^:]*:[A-Za-z0-9_\-]{1,256}$")


def _endpoint_url(s: _Section) -> str | None:
    url = s.text("endpoint_url", "")
    if url and not re.match(r"^https?://[^/]", url):
        s.error("endpoint_url", f"expected an http:// or https:// URL, got {url!r}")
        return None
    return url  # type: ignore[no-any-return]


def _parse_sqs(s: _Section) -> SqsConfig | None:
    queue = s.text("queue")
    errors_queue = s.text("errors_queue", None)
    values: dict[str, Any] = {
        "region": s.text("region", "eu-west-1"),
        "endpoint_url": _endpoint_url(s),
        "visibility_timeout": s.integer("visibility_timeout", 300, minimum=1),
        "max_tries": s.integer("max_tries", 5, minimum=1),
        "counts_delay": s.number("counts_delay", 60.0),
    }
    s.finish()
    if values["counts_delay"] is not None and values["counts_delay"] < 0:
        s.error("counts_delay", f"must be at least 0, got {values['counts_delay']:g}")
        return None
    if queue is not None and errors_queue is None:
        errors_queue = f"{queue}-errors"
    for key, name in (("queue", queue), ("errors_queue", errors_queue)):
        if name is not None and not _SQS_NAME_RE.match(name):
            fifo = " (FIFO queues are not supported)" if name.endswith(".fifo") else ""
            s.error(key, f"expected an SQS queue name of at most 80 letters, digits, '-' and '_',"
                         f" got {name!r}{fifo}")  # fmt: skip
            return None
    if queue is not None and queue == errors_queue:
        s.error("errors_queue", "must differ from `queue`")
        return None
    if values["visibility_timeout"] is not None and values["visibility_timeout"] > 43200:
        s.error("visibility_timeout", f"must be at most 43200 (12 h, SQS's limit), got "
                                      f"{values['visibility_timeout']}")  # fmt: skip
        return None
    if queue is None or None in values.values():
        return None
    return SqsConfig(queue=queue, errors_queue=errors_queue, **values)


def _parse_sns(s: _Section) -> SnsConfig | None:
    topic = s.text("topic")
    region = s.text("region", None)
    endpoint_url = _endpoint_url(s)
    s.finish()
    if topic is None or endpoint_url is None:
        return None
    match = _SNS_ARN_RE.match(topic)
    if match is None:
        s.error("topic", f"expected an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), got "
                         f"{topic!r}")  # fmt: skip
        return None
    region = region or match.group(1)
    if not region:
        s.error("region", "missing, and the topic ARN names no region")
        return None
    return SnsConfig(topic=topic, region=region, endpoint_url=endpoint_url)


def _parse_redis(s: _Section) -> RedisConfig | None:
    values: dict[str, Any] = {
        "url": s.text("url"),
        "stream": s.text("stream", "tileserver-jobs"),
        "group": s.text("group", "tileserver"),
        "claim_timeout": s.number("claim_timeout", 300.0, positive=True),
        "max_tries": s.integer("max_tries", 5, minimum=1),
        "timeout": s.number("timeout", 5.0, positive=True),
    }
    s.finish()
    url = values["url"]
    if url is not None and not re.match(r"^(redis|rediss)://[^/]|^unix:///?[^/]", url):
        s.error("url", f"expected a redis://host:port, rediss:// or unix:// URL, got {url!r}")
        return None
    for key in ("stream", "group"):
        if values[key] is not None and not values[key].strip():
            s.error(key, "must not be empty")
            return None
    if None in values.values():
        return None
    return RedisConfig(**values)


def _parse_cost(s: _Section | None) -> CostConfig | None:
    if s is None:
        return CostConfig()
    default = CostConfig()
    values = {
        key: s.number(key, getattr(default, key))
        for key in (
            "metatile_generation_time",
            "tile_generation_time",
            "tileonly_generation_time",
            "tile_size",
            "requests_per_month",
        )
    }
    s3 = s.section("s3")
    s3_values: dict[str, Any] = {}
    if s3 is not None:
        s3_values = {f.name: s3.number(f.name, getattr(default.s3, f.name)) for f in fields(S3Cost)}
        s3.finish()
    sqs = s.section("sqs")
    sqs_values: dict[str, Any] = {}
    if sqs is not None:
        sqs_values = {"request": sqs.number("request", default.sqs.request)}
        sqs.finish()
    s.finish()
    ok = True
    for section, found in ((s, values), (s3, s3_values), (sqs, sqs_values)):
        for key, value in found.items():
            if value is not None and value < 0:
                assert section is not None
                section.error(key, f"must be at least 0, got {value:g}")
                ok = False
    if not ok or None in (*values.values(), *s3_values.values(), *sqs_values.values()):
        return None
    return CostConfig(**values, s3=S3Cost(**s3_values), sqs=SqsCost(**sqs_values))


def _parse_empty(s: _Section | None) -> EmptyTile | None:
    if s is None:
        return None
    size = s.integer("size", minimum=0)
    digest = s.text("hash")
    s.finish()
    if size is None or digest is None:
        return None
    return EmptyTile(size=size, hash=digest)


def _parse_dimensions(s: _Section, key: str) -> tuple[Dimension, ...] | None:
    raw = s.raw(key)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        s.error(key, f"expected a list of dimensions, got {_describe(raw)}")
        return None
    dimensions: list[Dimension] = []
    ok = True
    for i, item in enumerate(raw):
        d = _Section(f"{s.where(key)}[{i}]", item, s.errors, s.child_origin(key, item))
        name = d.text("name")
        values = d.texts("values")
        default = d.text("default")
        d.finish()
        if None in (name, values, default):
            ok = False
            continue
        if not _NAME_RE.match(name) or name.lower() in _WMTS_PARAMETERS:
            d.error("name", f"invalid dimension name {name!r}")
            ok = False
            continue
        bad = [v for v in values if not _VALUE_RE.match(v)]
        if bad:
            d.error("values", f"invalid value {bad[0]!r}: use letters, digits and '_.:+-'")
            ok = False
            continue
        if default not in values:
            d.error("default", f"{default!r} is not one of the values {list(values)}")
            ok = False
            continue
        dimensions.append(Dimension(name=name, values=values, default=default))
    names = [d.name.lower() for d in dimensions]
    if len(set(names)) != len(names):
        s.error(key, "dimension names must be unique")
        return None
    return tuple(dimensions) if ok else None


def info_extension(info_format: str) -> str:
    """The file extension of a GetFeatureInfo format in REST URLs."""
    known = INFO_EXTENSIONS.get(info_format.lower())
    if known is not None:
        return known
    subtype = info_format.split(";")[0].rsplit("/", 1)[-1].rsplit("+", 1)[-1]
    return re.sub(r"[^a-z0-9]", "", subtype.lower()) or "info"


def _parse_upstream(s: _Section | None) -> UpstreamConfig | None:
    if s is None:
        return UpstreamConfig()
    per_host = s.integer("connections_per_host", 8, minimum=1)
    backoff = s.number("retry_backoff", 0.5)
    s.finish()
    if backoff is not None and backoff < 0:
        s.error("retry_backoff", f"expected a number of seconds >= 0, got {backoff!r}")
        return None
    if per_host is None or backoff is None:
        return None
    return UpstreamConfig(connections_per_host=per_host, retry_backoff=float(backoff))


_WMS_RESERVED = {
    "service", "request", "version", "layers", "bbox", "width", "height", "srs", "crs",
    "query_layers", "info_format", "i", "j", "x", "y",
}  # fmt: skip


def _parse_wms(s: _Section, kind: str | None) -> WmsSource | None:
    """The keys of a `type: wms` layer; None when one of them is wrong (reported)."""
    wms = kind == "wms"
    url = s.text("url") if wms else s.text("url", None)
    layers = s.text("layers") if wms else s.text("layers", None)
    version = s.text("version", "1.1.1")
    params = s.text_mapping("params", ())
    headers = s.text_mapping("headers", ())
    salt = s.flag("generate_salt", False)
    timeout = s.number("timeout", 30.0, positive=True)
    retries = s.integer("retries", 2, minimum=0)
    query_layers = s.text("query_layers", "")
    info_formats = s.texts("info_formats", None)
    if not wms:
        for key in ("url", "layers", "params", "headers", "query_layers", "info_formats"):
            if key in s.data and s.origin.get(key) != "layer_default":
                s.error(key, f"only for layers of type 'wms' (this layer is of type {kind!r})")
        return None
    ok = True
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        s.error("url", f"expected an http:// or https:// URL, got {url!r}")
        ok = False
    if version is not None and version not in WMS_VERSIONS:
        s.error("version", f"expected one of {', '.join(WMS_VERSIONS)}, got {version!r}")
        ok = False
    for name, _ in params or ():
        if name.lower() in _WMS_RESERVED:
            s.error(f"params.{name}", "set by tileserver for each request; remove it from params")
            ok = False
    if info_formats is not None and not query_layers:
        s.error("info_formats", "needs query_layers (the WMS layers GetFeatureInfo queries)")
        ok = False
    by_extension: dict[str, str] = {}
    for info_format in info_formats or ():
        other = by_extension.setdefault(info_extension(info_format), info_format)
        if other != info_format:
            s.error(
                "info_formats",
                f"{other!r} and {info_format!r} would share the REST extension "
                f"'.{info_extension(info_format)}': keep one",
            )
            ok = False
    values = (url, layers, version, params, headers, salt, timeout, retries, query_layers)
    if not ok or any(v is None for v in values):
        return None
    return WmsSource(
        url=url,
        layers=layers,
        version=version,
        params=params,
        headers=headers,
        generate_salt=salt,
        timeout=float(timeout),
        retries=retries,
        query_layers=query_layers,
        info_formats=tuple(info_formats or (DEFAULT_INFO_FORMATS if query_layers else ())),
    )


def _parse_postgresql(s: _Section | None) -> PostgresqlConfig:
    if s is None:
        return PostgresqlConfig()
    connection = s.text("connection", "")
    s.finish()
    return PostgresqlConfig(connection=connection or "")


def _parse_geoms(
    s: _Section, key: str, grid: Grid | None, base_dir: Path, default_connection: str
) -> tuple[LayerGeom, ...] | None:
    """A layer's `geoms`: a list of {file} or {sql, connection}, each with optional
    min_resolution / max_resolution. Only checked here: files are read, and queries run,
    when a generation starts."""
    raw = s.raw(key)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        s.error(key, f"expected a list of {{file: ...}} or {{sql: ...}}, got {_describe(raw)}")
        return None
    set_in = f" (set in {s.origin[key]})" if key in s.origin else ""
    geoms: list[LayerGeom] = []
    ok = True
    for i, item in enumerate(raw):
        g = _Section(f"{s.where(key)}[{i}]", item, s.errors, s.child_origin(key, item))
        file_raw = g.text("file", None)
        sql = g.text("sql", None)
        connection = g.text("connection", None)
        min_resolution = g.number("min_resolution", None, positive=True)
        max_resolution = g.number("max_resolution", None, positive=True)
        g.finish()
        if not g.ok:
            ok = False
            continue
        entry_ok = True
        has_file, has_sql = "file" in g.data, "sql" in g.data
        if has_file == has_sql:
            both = "not both" if has_file else "none given"
            g.errors.add(g.path, f"needs exactly one of 'file' and 'sql', {both}{set_in}")
            entry_ok = False
        if has_file and "connection" in g.data:
            g.error("connection", "only for an 'sql' entry")
            entry_ok = False
        path: Path | None = None
        if file_raw is not None:
            path = _config_path(file_raw, base_dir)
            reason = _unreadable(path)
            if reason is not None:
                g.error("file", f"cannot read geometry file '{path}': {reason}")
                entry_ok = False
        if sql is not None and not sql.strip():
            g.error("sql", "is empty")
            entry_ok = False
        elif sql is not None and re.match(r"(?i)\s*select\b", sql):
            # TileCloud-chain's form: it is run as SELECT ST_AsBinary(geom) FROM (SELECT <sql>).
            g.error("sql", "write it without the leading SELECT, e.g. 'way AS geom FROM ...'")
            entry_ok = False
        if None not in (min_resolution, max_resolution) and min_resolution > max_resolution:
            g.error(
                "min_resolution",
                f"{min_resolution:g} is above max_resolution {max_resolution:g}",
            )
            entry_ok = False
        values = {
            "file": file_raw,
            "sql": sql,
            "connection": connection,
            "min_resolution": min_resolution,
            "max_resolution": max_resolution,
        }
        wrong_type = any(key in g.data and value is None for key, value in values.items())
        if wrong_type or not entry_ok:
            ok = False
            continue
        geom = LayerGeom(
            file=path,
            sql=sql,
            connection=connection if connection is not None else default_connection,
            min_resolution=min_resolution,
            max_resolution=max_resolution,
        )
        if grid is not None and not any(geom.applies_to(r) for r in grid.resolutions):
            g.errors.add(
                g.path,
                f"no level of grid {grid.name!r} has a resolution between min_resolution "
                f"and max_resolution{set_in}",
            )
            ok = False
            continue
        geoms.append(geom)
    return tuple(geoms) if ok else None


def _parse_layer(
    name: str,
    s: _Section,
    grids: Mapping[str, Grid],
    caches: Mapping[str, CacheConfig],
    base_dir: Path,
    default_cache: str | None,
    default_connection: str = "",
) -> Layer | None:
    kind = s.text("type")
    if kind is not None and kind not in LAYER_TYPES:
        later = " (not supported yet)" if kind in FUTURE_LAYER_TYPES else ""
        s.error("type", f"unknown layer type {kind!r}{later} (supported: {', '.join(LAYER_TYPES)})")
        kind = None
    title = s.text("title", name)
    abstract = s.text("abstract", "")
    grid_name = s.text("grid")
    grid: Grid | None = None
    if grid_name is not None:
        grid = grids.get(grid_name)
        if grid is None:
            s.error("grid", f"unknown grid {grid_name!r} (defined: {', '.join(grids) or 'none'})")
    bbox = _bbox(s, "bbox", None)
    mapfile_raw = s.text("mapfile") if kind == "mapnik" else s.text("mapfile", None)
    meta = s.flag("meta", True)
    meta_size = s.integer("meta_size", 8, minimum=1)
    meta_buffer = s.integer("meta_buffer", 32, minimum=0)
    mime_type = s.text("mime_type", None)
    extension = s.text("extension", "png")
    output_format = s.text("output_format", None)
    wmts_style = s.text("wmts_style", "default")
    dimensions = _parse_dimensions(s, "dimensions")
    expires = s.number("expires", 4.0, positive=True)
    min_resolution_seed = s.number("min_resolution_seed", None, positive=True)
    missing_tile = s.text("missing_tile", "render")
    # An unknown generation.default_cache is reported once, at its own path.
    cache = s.text("cache", default_cache if default_cache in caches else None)
    empty_tile = _parse_empty(s.section("empty_tile_detection"))
    empty_meta = _parse_empty(s.section("empty_metatile_detection"))
    geoms = _parse_geoms(s, "geoms", grid, base_dir, default_connection)
    wms = _parse_wms(s, kind)
    connection = s.text("connection", "")
    s.finish()
    if kind == "wms" and wms is None:
        return None
    if connection and kind != "mapnik":
        if s.origin.get("connection") != "layer_default":
            s.error("connection", "only for layers of type 'mapnik' (PostGIS datasources)")
            return None
        connection = ""

    ok = True
    if extension is not None and extension not in FORMATS:
        s.error("extension", f"unsupported extension {extension!r} (supported: png, jpeg)")
        ok = False
    elif extension is not None:
        expected = FORMATS[extension]
        if mime_type is None:
            mime_type = expected
        elif mime_type != expected:
            s.error("mime_type", f"{mime_type!r} does not match extension {extension!r}")
            ok = False
        if output_format is None:
            output_format = DEFAULT_OUTPUT_FORMAT[extension]
    if missing_tile is not None and missing_tile not in MISSING_TILE:
        s.error("missing_tile", f"expected one of {', '.join(MISSING_TILE)}, got {missing_tile!r}")
        ok = False
    if wmts_style is not None and not _NAME_RE.match(wmts_style):
        s.error("wmts_style", f"invalid style name {wmts_style!r}")
        ok = False
    if cache is not None and cache not in caches:
        s.error("cache", f"unknown cache {cache!r} (defined: {', '.join(caches) or 'none'})")
        ok = False
    if grid is not None and bbox is not None and not bbox.intersects(grid.bbox):
        s.error("bbox", f"{list(bbox.as_tuple())} is outside grid {grid.name!r}")
        ok = False
    if grid is not None and meta_buffer is not None and meta_buffer > 4 * grid.tile_size:
        s.error("meta_buffer", f"at most {4 * grid.tile_size} pixels, got {meta_buffer}")
        ok = False
    mapfile: Path | None = None
    if mapfile_raw is not None:
        mapfile = _config_path(mapfile_raw, base_dir)
        reason = _unreadable(mapfile)
        if reason is not None:
            s.error("mapfile", f"cannot read Mapnik file '{mapfile}': {reason}")
            ok = False
    required = (kind, title, grid, meta, meta_size, meta_buffer, mime_type, extension)
    more = (output_format, wmts_style, dimensions, expires, missing_tile, geoms)
    if not ok or grid is None or dimensions is None or geoms is None:
        return None
    if any(v is None for v in (*required, *more)):
        return None
    return Layer(
        name=name,
        type=kind,
        title=title,
        abstract=abstract,
        grid=grid,
        bbox=bbox or grid.bbox,
        mapfile=mapfile,
        meta=meta,
        meta_size=meta_size,
        meta_buffer=meta_buffer,
        mime_type=mime_type,
        extension=extension,
        output_format=output_format,
        wmts_style=wmts_style,
        dimensions=dimensions,
        expires_hours=expires,
        min_resolution_seed=min_resolution_seed,
        cache=cache,
        missing_tile=missing_tile,
        empty_tile_detection=empty_tile,
        empty_metatile_detection=empty_meta,
        geoms=geoms,
        wms=wms,
        connection=connection or "",
    )


def parse_config(data: Any, base_dir: Path, source: Path | None = None) -> Config:
    """Validates a parsed YAML document; raises ConfigError listing every mistake."""
    errors = _Errors()
    root = _Section("", data, errors)
    errors.raise_if_any()

    # Stage 1: every section on its own (types, required keys, unknown keys).
    grids: dict[str, Grid] = {}
    for name, value in _items(root.section("grids", required=True)):
        if _check_name(errors, f"grids.{name}", name):
            grid = _parse_grid(name, _Section(f"grids.{name}", value, errors))
            if grid is not None:
                grids[name] = grid
    caches: dict[str, CacheConfig] = {}
    for name, value in _items(root.section("caches")):
        if _check_name(errors, f"caches.{name}", name):
            cache = _parse_cache(name, _Section(f"caches.{name}", value, errors))
            if cache is not None:
                caches[name] = cache
    generation = _parse_generation(root.section("generation"))
    server = _parse_server(root.section("server"))
    memcached_section = root.section("memcached")
    memcached = _parse_memcached(memcached_section) if memcached_section else None
    metadata = _parse_metadata(root.section("metadata"))
    provider = _parse_provider(root.section("provider"))
    cost = _parse_cost(root.section("cost"))
    postgresql = _parse_postgresql(root.section("postgresql"))
    upstream = _parse_upstream(root.section("upstream"))
    sqs_section, sns_section = root.section("sqs"), root.section("sns")
    sqs = _parse_sqs(sqs_section) if sqs_section is not None else None
    sns = _parse_sns(sns_section) if sns_section is not None else None
    redis_section = root.section("redis")
    redis = _parse_redis(redis_section) if redis_section is not None else None
    layer_default = root.section("layer_default")
    layers_section = root.section("layers", required=True)
    root.finish()
    errors.raise_if_any()

    # Stage 2: references between sections, and the layers (which reference the rest).
    if generation.queue is not None and root.data.get(generation.queue) is None:
        errors.add(
            "generation.queue",
            f"{generation.queue!r} needs a `{generation.queue}` section (see the README, "
            "'Generation across many machines')",
        )
    elif generation.queue is None and sqs is not None and redis is not None:
        errors.add(
            "generation.queue",
            "both `sqs` and `redis` are set: say which one distributed generation uses "
            f"({' or '.join(QUEUE_TYPES)})",
        )
    if generation.default_cache is not None and generation.default_cache not in caches:
        errors.add(
            "generation.default_cache",
            f"unknown cache {generation.default_cache!r} (defined: {', '.join(caches) or 'none'})",
        )
    defaults = layer_default.data if layer_default is not None and layer_default.ok else {}
    layers: dict[str, Layer] = {}
    for name, value in _items(layers_section):
        path = f"layers.{name}"
        if not _check_name(errors, path, name):
            continue
        if value is not None and not isinstance(value, dict):
            errors.add(path, f"expected a mapping, got {_describe(value)}")
            continue
        merged = {**defaults, **(value or {})}
        origin = {k: "layer_default" for k in defaults if k not in (value or {})}
        layer = _parse_layer(
            name,
            _Section(path, merged, errors, origin),
            grids,
            caches,
            base_dir,
            generation.default_cache,
            postgresql.connection,
        )
        if layer is not None:
            layers[name] = layer
    if layers_section is not None and layers_section.ok and not layers_section.data:
        errors.add("layers", "no layer defined")
    for i, name in enumerate(generation.default_layers):
        if name not in layers and (layers_section is None or name not in layers_section.data):
            errors.add(
                f"generation.default_layers[{i}]",
                f"unknown layer {name!r} (defined: {', '.join(layers) or 'none'})",
            )
    errors.raise_if_any()
    assert server is not None and cost is not None and upstream is not None  # stage 1 raised
    return Config(
        grids=grids,
        caches=caches,
        layers=layers,
        generation=generation,
        server=server,
        memcached=memcached,
        metadata=metadata,
        provider=provider,
        cost=cost,
        postgresql=postgresql,
        upstream=upstream,
        sqs=sqs,
        sns=sns,
        redis=redis,
        source=source,
    )
