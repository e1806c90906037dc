"""The checks of each section beyond its types, and its domain object: grids, caches,
server, memcached, generation, queues, cost. Layers are in `layers.py`."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from tileserver.config.document import (
    CacheDoc,
    CostDoc,
    GenerationDoc,
    GridDoc,
    MemcachedDoc,
    ProviderDoc,
    RedisDoc,
    ServerDoc,
    SnsDoc,
    SqsDoc,
)
from tileserver.config.messages import unknown_key
from tileserver.config.model import (
    _VALUE_RE,
    CACHE_TYPES,
    LOG_FORMATS,
    QUEUE_TYPES,
    AdminConfig,
    CacheConfig,
    CostConfig,
    Generation,
    MemcachedConfig,
    Metadata,
    PostgresqlConfig,
    Provider,
    RedisConfig,
    S3Cost,
    ServerConfig,
    SnsConfig,
    SqsConfig,
    SqsCost,
    UpstreamConfig,
)
from tileserver.crs import crs_info
from tileserver.grid import Grid
from tileserver.store_layout import check_path
from tileserver.types import BBox

# TileCloud-chain's cache types that tileserver does not offer (azure, bsddb; mbtiles
# until issue 18's cache lands), refused with their name where a layer uses them.
TCC_CACHE_TYPES = ("mbtiles", "bsddb", "azure")
_URL_RE = re.compile(r"^https?://[^/]")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQS_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")  # SQS's rule for standard queues
_SNS_ARN_RE = re.compile(r"^arn:[^:]+:sns:([^:]*):[^:]*:[A-Za-z0-9_\-]{1,256}$")
_S3_ONLY = ("bucket", "region", "endpoint_url", "cache_control", "host")


class Errors:
    """The messages of a validation, each 'yaml.path: what is wrong'."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.warnings: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.messages.append(f"{path}: {message}")

    def warn(self, path: str, message: str) -> None:
        text = f"{path}: {message}"
        if text not in self.warnings:
            self.warnings.append(text)


def bbox_of(errors: Errors, path: str, values: list[float]) -> BBox | None:
    if len(values) != 4:
        errors.add(path, f"expected 4 numbers [minx, miny, maxx, maxy], got {len(values)}")
        return None
    try:
        return BBox(*values)
    except ValueError:
        errors.add(path, f"minx must be < maxx and miny < maxy, got {list(values)}")
        return None


def build_grid(errors: Errors, name: str, doc: GridDoc) -> Grid | None:
    path = f"grids.{name}"
    before = len(errors.messages)
    resolutions = tuple(doc.resolutions)
    if not resolutions:
        errors.add(f"{path}.resolutions", "expected a non-empty list of numbers, got a list")
    elif any(r <= 0 for r in resolutions):
        errors.add(f"{path}.resolutions", "resolutions must be greater than 0")
    elif any(a <= b for a, b in itertools.pairwise(resolutions)):
        errors.add(
            f"{path}.resolutions", "resolutions must be sorted from the largest to the smallest"
        )
    if doc.matrix_identifier not in ("zoom", "resolution"):
        errors.add(
            f"{path}.matrix_identifier",
            f"expected 'zoom' or 'resolution', got {doc.matrix_identifier!r}",
        )
    bbox = bbox_of(errors, f"{path}.bbox", doc.bbox)
    try:
        info = crs_info(doc.srs)
    except ValueError:
        errors.add(f"{path}.srs", f"unknown CRS {doc.srs!r} (expected e.g. 'EPSG:3857')")
        return None
    if doc.unit is not None:
        expected = "degrees" if info.meters_per_unit != 1.0 else "m"
        if doc.unit not in (expected, "degree" if expected == "degrees" else "meters"):
            errors.add(f"{path}.unit", f"{doc.srs} is in {expected}, not {doc.unit!r}")
    if len(errors.messages) > before or bbox is None:
        return None
    return Grid(
        name=name,
        srs=doc.srs,
        bbox=bbox,
        resolutions=resolutions,
        tile_size=doc.tile_size,
        matrix_identifier=doc.matrix_identifier,
        meters_per_unit=info.meters_per_unit,
        yx_axis_order=info.yx_axis_order,
        crs_urn=info.urn,
    )


def expand_urls(doc: CacheDoc) -> list[str]:
    """TileCloud-chain's http_url placeholders: one URL per entry of `hosts` (%(host)s,
    else the S3 `host`), %(bucket)s and %(folder)s replaced."""
    urls = [doc.http_url] if doc.http_url else []
    urls += [doc.http_urls] if isinstance(doc.http_urls, str) else list(doc.http_urls)
    hosts = list(doc.hosts) or ([doc.host] if doc.host else [])
    expanded: list[str] = []
    for url in urls:
        url = url.replace("%(bucket)s", doc.bucket or "").replace("%(folder)s", doc.folder or "")
        if "%(host)s" in url:
            expanded += [url.replace("%(host)s", host) for host in hosts]
        else:
            expanded.append(url)
    # An empty folder leaves '//' where TCC's URL had '/%(folder)s/'.
    return [re.sub(r"(?<!:)//+", "/", url) for url in expanded]


def build_cache(errors: Errors, name: str, doc: CacheDoc) -> CacheConfig | None:
    path = f"caches.{name}"
    before = len(errors.messages)
    if doc.type not in CACHE_TYPES:
        if doc.type in TCC_CACHE_TYPES:
            return None  # build.py warns, and refuses it where a layer uses it
        supported = ", ".join(CACHE_TYPES)
        errors.add(f"{path}.type", f"unknown cache type {doc.type!r} (supported: {supported})")
        return None
    if doc.type == "filesystem":
        allowed = ["folder", "http_url", "http_urls", "hosts", "type", "wmtscapabilities_file"]
        for key in _S3_ONLY:
            if key in doc.model_fields_set:
                errors.add(f"{path}.{key}", unknown_key(key, allowed))
        if doc.folder is None:
            errors.add(f"{path}.folder", "missing required key")
    elif doc.bucket is None:
        errors.add(f"{path}.bucket", "missing required key")
    for key, urls in (("http_url", [doc.http_url]), ("http_urls", doc.http_urls)):
        for url in [urls] if isinstance(urls, str) else urls:
            if url and not _URL_RE.match(url):
                errors.add(f"{path}.{key}", f"expected an http:// or https:// URL, got {url!r}")
    urls = expand_urls(doc)
    if any("%(host)s" in url for url in [doc.http_url, *doc.http_urls]) and not (
        doc.hosts or doc.host
    ):
        errors.add(f"{path}.http_url", "uses %(host)s: list the hosts in `hosts`")
    # TileCloud-chain wrote it with a leading '/'; it is relative to the store's root.
    capabilities_file = doc.wmtscapabilities_file.lstrip("/")
    try:
        check_path(capabilities_file)
    except ValueError:
        errors.add(
            f"{path}.wmtscapabilities_file",
            f"must be a relative path inside the cache, got {capabilities_file!r}",
        )
    endpoint = doc.endpoint_url or (f"https://{doc.host}" if doc.host else "")
    if doc.endpoint_url and not _URL_RE.match(doc.endpoint_url):
        errors.add(f"{path}.endpoint_url", f"expected an http:// or https:// URL, got {endpoint!r}")
    if len(errors.messages) > before:
        return None
    return CacheConfig(
        name=name,
        type=doc.type,
        folder=doc.folder or "",
        bucket=doc.bucket or "",
        region=doc.region,
        endpoint_url=endpoint if doc.type == "s3" else "",
        cache_control=doc.cache_control,
        http_url=urls[0] if len(urls) == 1 else "",
        http_urls=tuple(urls) if len(urls) > 1 else (),
        wmtscapabilities_file=capabilities_file,
    )


def texts(value: list[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def build_memcached(errors: Errors, doc: MemcachedDoc) -> MemcachedConfig | None:
    servers: list[tuple[str, int]] = []
    for i, text in enumerate(texts(doc.servers)):
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            errors.add(f"memcached.servers[{i}]", f"expected 'host:port', got {text!r}")
            continue
        servers.append((host.strip("[]"), int(port)))
    prefix = doc.prefix
    if len(prefix) > 100 or not _VALUE_RE.match(prefix.replace("/", "_")):
        errors.add("memcached.prefix", "must be at most 100 letters, digits or '_-.:/' characters")
        return None
    if not servers:
        return None
    return MemcachedConfig(
        servers=tuple(servers),
        prefix=prefix,
        timeout=doc.timeout,
        pool_size=doc.pool_size,
        retry_interval=doc.retry_interval,
        lock_timeout=doc.lock_timeout,
        lock_lease=doc.lock_lease,
    )


def build_server(errors: Errors, doc: ServerDoc) -> ServerConfig:
    if doc.log_format not in LOG_FORMATS:
        errors.add(
            "server.log_format",
            f"expected one of {', '.join(LOG_FORMATS)}, got {doc.log_format!r}",
        )
    if doc.url is not None and not re.match(r"^https?://", doc.url):
        errors.add("server.url", f"expected an http:// or https:// URL, got {doc.url!r}")
    if not _ENV_NAME_RE.match(doc.admin.token_env):
        errors.add(
            "server.admin.token_env",
            f"expected the name of an environment variable, got {doc.admin.token_env!r}",
        )
    values = doc.model_dump(include=set(ServerConfig.__dataclass_fields__) - {"admin"})
    return ServerConfig(**values, admin=AdminConfig(**doc.admin.model_dump()))


def build_generation(errors: Errors, doc: GenerationDoc, queue_store: str | None) -> Generation:
    queue = doc.queue or queue_store
    where = "generation.queue" if doc.queue else "queue_store"
    if queue is not None and queue not in QUEUE_TYPES:
        feature = " (TileCloud-chain's PostgreSQL job queue is not offered)"
        extra = feature if queue == "postgresql" else ""
        errors.add(where, f"expected one of {', '.join(QUEUE_TYPES)}, got {queue!r}{extra}")
        queue = None
    return Generation(
        default_cache=doc.default_cache,
        default_layers=texts(doc.default_layers),
        number_process=doc.number_process,
        queue=queue,
        error_file=doc.error_file,
        maxconsecutive_errors=doc.maxconsecutive_errors,
    )


def _endpoint(errors: Errors, path: str, url: str) -> None:
    if url and not _URL_RE.match(url):
        errors.add(path, f"expected an http:// or https:// URL, got {url!r}")


def build_sqs(errors: Errors, doc: SqsDoc) -> SqsConfig | None:
    before = len(errors.messages)
    _endpoint(errors, "sqs.endpoint_url", doc.endpoint_url)
    errors_queue = doc.errors_queue or f"{doc.queue}-errors"
    for key, name in (("queue", doc.queue), ("errors_queue", errors_queue)):
        if not _SQS_NAME_RE.match(name):
            fifo = " (FIFO queues are not supported)" if name.endswith(".fifo") else ""
            errors.add(f"sqs.{key}", f"expected an SQS queue name of at most 80 letters, "
                                     f"digits, '-' and '_', got {name!r}{fifo}")  # fmt: skip
    if doc.queue == errors_queue:
        errors.add("sqs.errors_queue", "must differ from `queue`")
    if len(errors.messages) > before:
        return None
    return SqsConfig(**{**doc.model_dump(), "errors_queue": errors_queue})


def build_sns(errors: Errors, doc: SnsDoc) -> SnsConfig | None:
    _endpoint(errors, "sns.endpoint_url", doc.endpoint_url)
    match = _SNS_ARN_RE.match(doc.topic)
    if match is None:
        errors.add("sns.topic", f"expected an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), "
                                f"got {doc.topic!r}")  # fmt: skip
        return None
    region = doc.region or match.group(1)
    if not region:
        errors.add("sns.region", "missing, and the topic ARN names no region")
        return None
    return SnsConfig(topic=doc.topic, region=region, endpoint_url=doc.endpoint_url)


def build_redis(errors: Errors, doc: RedisDoc) -> RedisConfig | None:
    before = len(errors.messages)
    if not re.match(r"^(redis|rediss)://[^/]|^unix:///?[^/]", doc.url):
        errors.add(
            "redis.url", f"expected a redis://host:port, rediss:// or unix:// URL, got {doc.url!r}"
        )
    for key in ("stream", "group"):
        if not getattr(doc, key).strip():
            errors.add(f"redis.{key}", "must not be empty")
    if len(errors.messages) > before:
        return None
    return RedisConfig(**doc.model_dump(include=set(RedisConfig.__dataclass_fields__)))


def build_cost(doc: CostDoc) -> CostConfig:
    values = doc.model_dump(include=set(CostConfig.__dataclass_fields__) - {"s3", "sqs"})
    if doc.request_per_layers is not None and "requests_per_month" not in doc.model_fields_set:
        values["requests_per_month"] = doc.request_per_layers
    return CostConfig(
        **values, s3=S3Cost(**doc.s3.model_dump()), sqs=SqsCost(**doc.sqs.model_dump())
    )


def build_provider(doc: ProviderDoc) -> Provider:
    contact, phone, address = doc.contact, doc.contact.info.phone, doc.contact.info.address
    return Provider(
        name=doc.name,
        url=doc.url,
        contact_name=contact.name,
        contact_position=contact.position,
        phone_voice=phone.voice,
        phone_fax=phone.fax,
        delivery_point=address.delivery,
        city=address.city,
        area=address.area,
        postal_code=address.postal_code,
        country=address.country,
        email=address.email,
    )


def build_simple(docs: Mapping[str, Any]) -> tuple[Metadata, PostgresqlConfig, UpstreamConfig]:
    """metadata, postgresql and upstream: their keys as they are."""
    m = docs["metadata"]
    metadata = Metadata(
        title=m.title,
        abstract=m.abstract,
        keywords=texts(m.keywords),
        fees=m.fees,
        access_constraints=m.access_constraints,
    )
    return (
        metadata,
        PostgresqlConfig(connection=docs["postgresql"].connection),
        UpstreamConfig(**docs["upstream"].model_dump()),
    )


def names_of(mapping: Mapping[str, object]) -> str:
    return ", ".join(mapping) or "none"
