"""The checks of each section beyond its types, and its domain object: grids, server,
generation, queues, cost; `Errors` and the `Scope` of one layer collect the messages.
Layers are in `layers.py`, caches in `caches.py`."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from tileserver.config.document import (
    CostDoc,
    GenerationDoc,
    ProviderDoc,
    RedisDoc,
    ServerDoc,
    SnsDoc,
    SqsDoc,
)
from tileserver.config.layer_document import GridDoc
from tileserver.config.model import (
    LOG_FORMATS,
    QUEUE_TYPES,
    AdminConfig,
    CostConfig,
    Generation,
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
from tileserver.types import BBox

URL_RE = re.compile(r"^https?://[^/]")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQS_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")  # SQS's rule for standard queues
_SNS_ARN_RE = re.compile(r"^arn:[^:]+:sns:([^:]*):[^:]*:[A-Za-z0-9_\-]{1,256}$")


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


class Scope:
    """Reports on one layer: 'layers.NAME.key: message (set in ORIGIN)'."""

    def __init__(self, errors: Errors, name: str, origin: Mapping[str, str]) -> None:
        self.errors, self.path, self.origin = errors, f"layers.{name}", origin
        self.failed = False

    def set_in(self, key: str) -> str:
        return f" (set in {self.origin[key]})" if key in self.origin else ""

    def error(self, key: str, message: str) -> None:
        where = f"{self.path}.{key}" if key else self.path
        self.errors.add(where, message + self.set_in(key.split(".")[0].split("[")[0]))
        self.failed = True

    def warn(self, key: str, message: str) -> None:
        self.errors.warn(f"{self.path}.{key}", message + self.set_in(key))


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


def texts(value: list[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


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
    if url and not URL_RE.match(url):
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
