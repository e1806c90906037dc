"""The checks of the caches beyond their types, and their domain objects: the tile stores
of `caches` (which layers may use which), and the on-demand cache (`memcached` or
`redis_cache`, `server.tile_cache` choosing when both are set)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tileserver.config.document import MemcachedDoc, RedisCacheDoc
from tileserver.config.layer_document import CacheDoc
from tileserver.config.layer_model import _VALUE_RE, Layer
from tileserver.config.messages import unknown_key
from tileserver.config.model import (
    CACHE_TYPES,
    SINGLE_FILE_CACHES,
    TILE_CACHES,
    WEB_MERCATOR_CACHES,
    CacheConfig,
    MemcachedConfig,
    RedisCacheConfig,
    ServerConfig,
)
from tileserver.config.sections import URL_RE, Errors, texts
from tileserver.grid import web_mercator_zoom_offset
from tileserver.store_layout import check_path

# TileCloud-chain's cache types that tileserver does not offer, refused with their name
# where a layer uses them.
TCC_CACHE_TYPES = ("bsddb", "azure")
_COMMON = ("type", "http_url", "http_urls", "hosts", "wmtscapabilities_file")
# The keys of each cache type; another type's key is refused ("unknown key").
_KEYS = {
    "filesystem": (*_COMMON, "folder"),
    "s3": (*_COMMON, "folder", "bucket", "region", "endpoint_url", "cache_control", "host"),
    "mbtiles": (*_COMMON, "file", "folder"),
    "geopackage": (*_COMMON, "file", "folder"),
    "pmtiles": (*_COMMON, "file", "url"),
}
_PREFIX_RULE = "must be at most 100 letters, digits or '_-.:/' characters"


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


def _where(errors: Errors, path: str, doc: CacheDoc) -> None:
    """Where the tiles of a cache are: `folder` (filesystem), `bucket` (s3), one of `file`
    or `folder` (mbtiles, geopackage), one of `file` or `url` (pmtiles)."""
    if doc.type == "filesystem" and doc.folder is None:
        errors.add(f"{path}.folder", "missing required key")
    elif doc.type == "s3" and doc.bucket is None:
        errors.add(f"{path}.bucket", "missing required key")
    elif doc.type in (*SINGLE_FILE_CACHES, "pmtiles"):
        where = ("file", "url") if doc.type == "pmtiles" else ("file", "folder")
        given = [key for key in where if getattr(doc, key)]
        if len(given) != 1:
            errors.add(f"{path}.{where[0]}", f"a {doc.type} cache needs `{where[0]}` or "
                       f"`{where[1]}`, not {'both' if given else 'neither'}")  # fmt: skip
        if doc.url and not URL_RE.match(doc.url):
            errors.add(f"{path}.url", f"expected an http:// or https:// URL, got {doc.url!r}")


def build_cache(errors: Errors, name: str, doc: CacheDoc) -> CacheConfig | None:
    path = f"caches.{name}"
    before = len(errors.messages)
    if doc.type not in CACHE_TYPES:
        if doc.type in TCC_CACHE_TYPES:
            return None  # build.py warns, and refuses it where a layer uses it
        supported = ", ".join(CACHE_TYPES)
        errors.add(f"{path}.type", f"unknown cache type {doc.type!r} (supported: {supported})")
        return None
    allowed = _KEYS[doc.type]
    for key in sorted(doc.model_fields_set - set(allowed), key=list(CacheDoc.model_fields).index):
        if key not in ("tiles_url", "container"):  # TileCloud-chain's, warned about
            errors.add(f"{path}.{key}", unknown_key(key, allowed))
    _where(errors, path, doc)
    for key, urls in (("http_url", [doc.http_url]), ("http_urls", doc.http_urls)):
        for url in [urls] if isinstance(urls, str) else urls:
            if url and not URL_RE.match(url):
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
    if doc.endpoint_url and not URL_RE.match(doc.endpoint_url):
        errors.add(f"{path}.endpoint_url", f"expected an http:// or https:// URL, got {endpoint!r}")
    if len(errors.messages) > before:
        return None
    return CacheConfig(
        name=name,
        type=doc.type,
        folder=doc.folder or "",
        file=doc.file or "",
        url=doc.url or "",
        bucket=doc.bucket or "",
        region=doc.region,
        endpoint_url=endpoint if doc.type == "s3" else "",
        cache_control=doc.cache_control,
        http_url=urls[0] if len(urls) == 1 else "",
        http_urls=tuple(urls) if len(urls) > 1 else (),
        wmtscapabilities_file=capabilities_file,
    )


def check_cache_users(
    caches: Mapping[str, CacheConfig], layers: Mapping[str, Layer], errors: Errors
) -> None:
    """MBTiles and PMTiles hold Web Mercator tiles only, and a single MBTiles or PMTiles
    file holds one tileset: one layer, on one grid, with one value of each dimension."""
    users: dict[str, list[str]] = {}
    for layer in layers.values():
        cache = caches.get(layer.cache or "")
        if cache is None:
            continue
        users.setdefault(cache.name, []).append(layer.name)
        for grid in layer.grids if cache.type in WEB_MERCATOR_CACHES else ():
            if web_mercator_zoom_offset(grid) is None:
                errors.add(
                    f"layers.{layer.name}.cache",
                    f"cache {cache.name!r} is {cache.type}, which holds Web Mercator tiles only "
                    "(EPSG:3857, the world's bbox, resolutions halving), and grid "
                    f"{grid.name!r} is not: use a geopackage cache",
                )
                break
        if cache.type == "pmtiles" or (cache.type == "mbtiles" and cache.file):
            many = [f"{len(layer.grids)} grids"] if len(layer.grids) > 1 else []
            many += [f"{len(d.generated)} values of {d.name}"
                     for d in layer.dimensions if len(d.generated) > 1]  # fmt: skip
            if many:
                errors.add(f"layers.{layer.name}.cache", f"one {cache.type} file holds one "
                           f"tileset, and the layer has {' and '.join(many)}"
                           + _FOLDER_HINT.get(cache.type, ""))  # fmt: skip
    for name, cache in caches.items():
        single = cache.type == "pmtiles" or (cache.type == "mbtiles" and cache.file)
        if single and len(users.get(name, ())) > 1:
            errors.add(
                f"caches.{name}",
                f"one {cache.type} file holds one layer, and {', '.join(users[name])} use it"
                + _FOLDER_HINT.get(cache.type, ""),
            )


_FOLDER_HINT = {"mbtiles": ": use `folder` for a file per layer"}


def build_memcached(errors: Errors, doc: MemcachedDoc) -> MemcachedConfig | None:
    servers = _host_ports(errors, "memcached.servers", texts(doc.servers), keep_going=True)
    prefix = doc.prefix
    if len(prefix) > 100 or not _VALUE_RE.match(prefix.replace("/", "_")):
        errors.add("memcached.prefix", _PREFIX_RULE)
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


def _host_ports(
    errors: Errors, path: str, items: Any, keep_going: bool = False
) -> list[tuple[str, int]] | None:
    """'host:port' texts (or [host, port] pairs, TileCloud-chain's sentinels) as pairs;
    None after the first wrong one (all of them reported with keep_going)."""
    pairs: list[tuple[str, int]] = []
    for i, item in enumerate(items):
        text = ":".join(str(v) for v in item) if isinstance(item, list) else str(item)
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            errors.add(f"{path}[{i}]", f"expected 'host:port', got {item!r}")
            if not keep_going:
                return None
            continue
        pairs.append((host.strip("[]"), int(port)))
    return pairs


def build_redis_cache(errors: Errors, doc: RedisCacheDoc) -> RedisCacheConfig | None:
    servers = _host_ports(errors, "redis_cache.servers", texts(doc.servers))
    sentinels = _host_ports(errors, "redis_cache.sentinels", doc.sentinels)
    if servers is None or sentinels is None:
        return None
    given = [key for key, value in (("url", doc.url), ("servers", servers),
                                    ("sentinels", sentinels)) if value]  # fmt: skip
    if len(given) != 1:
        errors.add("redis_cache.url", "set one of `url`, `servers` or `sentinels` (Redis "
                   f"Sentinel), got {' and '.join(given) or 'none'}")  # fmt: skip
        return None
    if doc.url and not re.match(r"^(redis|rediss)://[^/]|^unix:///?[^/]", doc.url):
        expected = "expected a redis://host:port, rediss:// or unix:// URL"
        errors.add("redis_cache.url", f"{expected}, got {doc.url!r}")
        return None
    if len(doc.prefix) > 100 or not _VALUE_RE.match(doc.prefix.replace("/", "_")):
        errors.add("redis_cache.prefix", _PREFIX_RULE)
        return None
    values = doc.model_dump(exclude={"servers", "sentinels"})
    return RedisCacheConfig(**values, servers=tuple(servers), sentinels=tuple(sentinels))


def check_tile_cache(errors: Errors, server: ServerConfig | None, data: Mapping[str, Any],
                     memcached: bool, redis_cache: bool) -> None:  # fmt: skip
    """`server.tile_cache` names a section that is set; both set need it."""
    chosen = server.tile_cache if server is not None else None
    section_of = {"memcached": "memcached", "redis": "redis_cache"}
    if chosen is not None and chosen not in TILE_CACHES:
        errors.add("server.tile_cache",
                   f"expected one of {', '.join(TILE_CACHES)}, got {chosen!r}")  # fmt: skip
    elif chosen is not None and data.get(section_of[chosen]) is None:
        if not (chosen == "memcached" and memcached):  # mapcache.memcache_host counts
            errors.add("server.tile_cache", f"{chosen!r} needs a `{section_of[chosen]}` section")
    elif chosen is None and memcached and redis_cache:
        errors.add("server.tile_cache", "both `memcached` and `redis_cache` are set: say which "
                   f"one caches the on-demand tiles ({' or '.join(TILE_CACHES)})")  # fmt: skip
