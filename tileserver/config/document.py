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

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
)


def _number_as_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[
    str, BeforeValidator(_number_as_text), WithJsonSchema({"type": ["string", "number"]})
]
Flag = StrictBool
Int = StrictInt
Number = Annotated[float, Field(strict=True)]
Scalar = str | int | float | bool
NO_EFFECT = "TileCloud-chain's; accepted with a warning, it has no effect in tileserver"


def enum(*values: str) -> dict[str, Any]:
    """`json_schema_extra` publishing the values build.py accepts (checked there, with its
    own message)."""
    return {"enum": list(values)}


NO_EFFECT_MARK = "x-no-effect"
WMS_MARK = "x-wms-only"
WMS_ONLY: dict[str, Any] = {WMS_MARK: True}  # a key of `type: wms` layers only
UTFGRID_MARK = "x-utfgrid"


def no_effect(description: str = NO_EFFECT, mark: str = NO_EFFECT_MARK) -> Any:
    """A key accepted so that a TileCloud-chain file loads unchanged; build.py warns once
    that it has no effect here."""
    return Field(None, description=description, json_schema_extra={mark: True})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GridDoc(Section):
    """A TileMatrixSet: a CRS, a bbox whose top-left corner is the origin, resolutions."""

    srs: Text = Field(description="The CRS, e.g. 'EPSG:3857'")
    bbox: list[Number] = Field(description="[minx, miny, maxx, maxy] in the CRS")
    resolutions: list[Number] = Field(description="From the largest to the smallest")
    tile_size: Int = Field(256, ge=1, description="Tile width and height in pixels")
    matrix_identifier: Text = Field(
        "zoom",
        description="TileMatrix identifiers: the level ('0'), or TileCloud-chain's "
        "resolution identifier ('2_5' for 2.5)",
        json_schema_extra=enum("zoom", "resolution"),
    )
    unit: Text | None = Field(None, description="'m' or 'degrees'; checked against the CRS")
    name: Text | None = no_effect("TileCloud-chain 1.x; the key under `grids` names the grid")
    resolution_scale: Int | None = no_effect()
    proj4_literal: Text | None = no_effect()


class CacheDoc(Section):
    """A tile store: a folder (`filesystem`), an S3 bucket (`s3`), MBTiles or GeoPackage
    files (`mbtiles`, `geopackage`: one `file`, or a file per layer under `folder`), or a
    PMTiles archive, read-only (`pmtiles`: a `file` or a `url`)."""

    type: Text = Field(
        json_schema_extra=enum("filesystem", "s3", "mbtiles", "geopackage", "pmtiles")
    )
    folder: Text | None = Field(
        None,
        description="The store's root folder (prefix in S3); mbtiles, geopackage: where "
        "the file of each layer goes (TileCloud-chain's names)",
    )
    file: Text | None = Field(
        None,
        description="mbtiles: the file of the one layer using the cache; geopackage: the "
        "file of every layer using it; pmtiles: the archive",
    )
    url: Text | None = Field(
        None, description="pmtiles: the archive's http(s) URL (read with range requests)"
    )
    bucket: Text | None = Field(None, description="s3: the bucket")
    region: Text = Field("", description="s3: the bucket's region")
    endpoint_url: Text = Field("", description="s3: an S3-compatible endpoint")
    host: Text | None = Field(
        None,
        description="s3 (TileCloud-chain): the S3 host; the endpoint when endpoint_url is "
        "not set, and the value of %(host)s in http_url without `hosts`",
    )
    cache_control: Text = Field("", description="s3: Cache-Control of the tiles written")
    http_url: Text = Field(
        "",
        description="Public URL of the store's root; %(host)s, %(bucket)s and %(folder)s "
        "are replaced (one URL per entry of `hosts`)",
    )
    http_urls: list[Text] | Text = Field(default_factory=list, description="Public URLs")
    hosts: list[Text] = Field(default_factory=list, description="The values of %(host)s")
    wmtscapabilities_file: Text = Field(
        "1.0.0/WMTSCapabilities.xml",
        description="Where generate_controller writes the static Capabilities, in the store",
    )
    tiles_url: Text | None = no_effect()
    container: Text | None = no_effect("TileCloud-chain's Azure container (type azure)")


class DimensionDoc(Section):
    name: Text
    values: list[Text] | Text
    default: Text
    generate: list[Text] | Text | None = Field(
        None, description="The values generate_tiles renders (default: `default`)"
    )


class EmptyTileDoc(Section):
    """TileCloud-chain's size and hash of an empty tile's bytes, and (tileserver's) its
    colour: either, or both."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": ["size", "hash"]}, {"required": ["color"]}],
            "dependentRequired": {"size": ["hash"], "hash": ["size"]},
        }
    )

    size: Int | None = Field(None, ge=0, description="Size in bytes")
    hash: Text | None = Field(None, description="SHA-1 of the bytes, hexadecimal")
    color: Text | None = Field(
        None,
        description="A tile all of this colour is empty whatever its bytes: 'transparent', "
        "'#rrggbb' or '#rrggbbaa'",
    )


class GeomDoc(Section):
    file: Text | None = Field(None, description="A GeoJSON or WKT file")
    sql: Text | None = Field(None, description="'geom FROM table', run on PostGIS")
    connection: Text | None = Field(None, description="libpq connection string")
    min_resolution: Number | None = Field(None, gt=0)
    max_resolution: Number | None = Field(None, gt=0)
    datasource: Text | None = no_effect()


class LayerCostDoc(Section):
    """Per-layer `cost` (TileCloud-chain's): overrides the top-level figures."""

    tileonly_generation_time: Number | None = Field(None, ge=0, description="ms")
    tile_generation_time: Number | None = Field(None, ge=0, description="ms")
    metatile_generation_time: Number | None = Field(None, ge=0, description="ms")
    tile_size: Number | None = Field(None, ge=0, description="KiB")


def _keys_may_come_from_layer_default(schema: dict[str, Any]) -> None:
    schema.pop("required", None)


class LayerDoc(Section):
    """A layer, after `layer_default` (and YAML merge keys) are merged into it."""

    model_config = ConfigDict(json_schema_extra=_keys_may_come_from_layer_default)

    type: Text = Field(
        "wms",
        description="mapnik or wms; absent: wms, TileCloud-chain 1.x's default (a layer with "
        "a `mapfile` must say `mapnik`)",
        json_schema_extra=enum("mapnik", "wms"),
    )
    title: Text | None = None
    abstract: Text = ""
    grid: Text | None = Field(None, description="The layer's grid (TileMatrixSet)")
    grids: list[Text] | None = Field(None, description="Several grids (TileCloud-chain >= 1.23)")
    bbox: list[Number] | None = Field(None, description="Default: the grid's")
    mapfile: Text | None = Field(None, description="mapnik: the Mapnik XML style")
    meta: Flag = True
    meta_size: Int = Field(8, ge=1)
    meta_buffer: Int = Field(32, ge=0, description="Pixels rendered around a metatile")
    mime_type: Text | None = None
    extension: Text = Field("png", json_schema_extra=enum("png", "jpeg", "jpg"))
    output_format: Text | None = Field(None, description="The encoder, e.g. png, png256, jpeg85")
    wmts_style: Text = "default"
    dimensions: list[DimensionDoc] = Field(default_factory=list)
    expires: Number = Field(4.0, gt=0, description="Hours a tile is cached")
    stale_while_revalidate: Int = Field(
        0, ge=0, description="Seconds past `expires` a cached tile is answered at once while "
        "one background render refreshes it (RFC 5861; 0: off)",
    )  # fmt: skip
    stale_if_error: Int = Field(
        0, ge=0, description="Seconds past `expires` a cached tile is answered when its render "
        "fails (WMS or database down, render timeout) instead of a 503 (RFC 5861; 0: off)",
    )  # fmt: skip
    min_resolution_seed: Number | None = Field(None, gt=0)
    missing_tile: Text = Field(
        "render", json_schema_extra=enum("render", "no_content", "transparent")
    )
    cache: Text | None = Field(None, description="Default: generation.default_cache")
    empty_tile_detection: EmptyTileDoc | None = None
    empty_metatile_detection: EmptyTileDoc | None = None
    geoms: list[GeomDoc] = Field(default_factory=list)
    connection: Text = Field("", description="mapnik: replaces the style's PostGIS settings")
    px_buffer: Number = Field(
        0, ge=0, description="Pixels added around `geoms` when selecting tiles to generate"
    )
    data_buffer: Int | None = Field(
        None, ge=0, description="mapnik: pixels of data read around a metatile (buffer-size)"
    )
    cost: LayerCostDoc | None = None
    # type: wms (WMS_ONLY: refused on a layer of another type that sets it itself)
    url: Text | None = Field(None, description="wms: the WMS URL", json_schema_extra=WMS_ONLY)
    layers: Text | None = Field(
        None, description="wms: the LAYERS parameter", json_schema_extra=WMS_ONLY
    )
    version: Text = Field("1.1.1", json_schema_extra=enum("1.1.1", "1.3.0"))
    params: dict[str, Scalar] = Field(default_factory=dict, json_schema_extra=WMS_ONLY)
    headers: dict[str, Scalar] = Field(default_factory=dict, json_schema_extra=WMS_ONLY)
    generate_salt: Flag = False
    timeout: Number = Field(30.0, gt=0)
    retries: Int = Field(2, ge=0)
    query_layers: Text = Field("", json_schema_extra=WMS_ONLY)
    info_formats: list[Text] | Text | None = Field(None, json_schema_extra=WMS_ONLY)
    # TileCloud-chain's, without effect here
    wms_url: Text | None = no_effect()
    legends: Any = no_effect()
    legend: Any = no_effect()
    legend_mime: Any = no_effect()
    legend_extension: Any = no_effect()
    legend_extention: Any = no_effect()
    pre_hash_post_process: Any = no_effect()
    post_process: Any = no_effect()
    meta_save_options: Any = no_effect()
    force_tile_matrix_set_limits: Any = no_effect()
    geom_filter: Any = no_effect()
    srs: Any = no_effect()
    proj4_literal: Any = no_effect()
    # UTFGrid (TileCloud-chain's), a feature tileserver does not offer
    layers_fields: Any = no_effect("UTFGrid (not offered by tileserver)", UTFGRID_MARK)
    drop_empty_utfgrid: Any = no_effect("UTFGrid (not offered by tileserver)", UTFGRID_MARK)
    resolution: Any = no_effect("UTFGrid (not offered by tileserver)", UTFGRID_MARK)


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
    hot_cache_mb: Int = Field(0, ge=0)
    hot_cache_max_age: Number = Field(10.0, gt=0)
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
