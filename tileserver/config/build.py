"""`parse_config`: the plain data of a YAML document -> a checked `Config`, every mistake
reported at once.

Each section is validated on its own against its model of `document.py` (types, required
and unknown keys: pydantic, in one pass), then checked against the others (grids, caches,
layers), so a mistake in one section never hides the mistakes of another. TileCloud-chain
files load unchanged: `defaults` (the home of YAML anchors) is read through the anchors,
keys that do nothing here get one warning each, and features tileserver does not offer are
named where something uses them.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tileserver.config import caches as C
from tileserver.config import sections as S
from tileserver.config.document import Document, MapcacheDoc, MemcachedDoc
from tileserver.config.layer_document import CacheDoc, GridDoc, LayerDoc
from tileserver.config.layer_model import _NAME_RE, Layer
from tileserver.config.layers import UTFGRID, build_layer, is_utfgrid
from tileserver.config.messages import (
    _without_union_branches,
    describe,
    messages_of,
    unknown_key,
)
from tileserver.config.model import CACHE_TYPES, QUEUE_TYPES, Config
from tileserver.config.no_effect import grouped, keys_without_effect, warn_without_effect
from tileserver.errors import ConfigError
from tileserver.grid import Grid

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class MergedDict(dict[str, Any]):
    """A YAML mapping that took keys from an anchor (`<<: *layer`): `merged` names them,
    so that a message about one says it was set in `defaults`."""

    merged: frozenset[str] = frozenset()


# Stand-ins for a required key whose value was wrong, so that the rest of its section is
# still checked (its messages at that key are dropped): every mistake is reported at once.
_STAND_INS: dict[str, Any] = {
    "srs": "EPSG:3857",
    "bbox": [0, 0, 1, 1],
    "resolutions": [1.0],
    "name": "x",
    "values": ["x"],
    "default": "x",
    "size": 0,
    "hash": "",
}


def _without(data: Any, loc: tuple[int | str, ...]) -> None:
    """Deletes the value at loc (a wrong key, or an item of a list of scalars)."""
    for step in loc[:-1]:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(data, dict) and loc[-1] in data:
        key = loc[-1]
        if key in _STAND_INS:
            data[key] = _STAND_INS[key]
        else:
            del data[key]


def _salvage(model: type[M], data: Any, exc: ValidationError) -> M | None:
    """data validated with its wrong keys left out (or stood in for), None when that is
    not possible."""
    if not isinstance(data, dict):
        return None
    data = copy.deepcopy(dict(data))
    for error in exc.errors():
        loc = _without_union_branches(error["loc"])
        if not loc or loc == ("type",):
            return None
        _without(
            data,
            loc
            if error["type"] == "extra_forbidden" or len(loc) < 2 or not isinstance(loc[-1], int)
            else loc[:-1],
        )
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _validate(errors: S.Errors, model: type[M], data: Any, path: str,
              origin: Mapping[str, str] | None = None) -> tuple[M | None, M | None]:  # fmt: skip
    """(the section, or None when it is wrong; the section with its wrong keys left out,
    to check the rest of it)."""
    try:
        doc = model.model_validate(data)
        return doc, doc
    except ValidationError as exc:
        errors.messages.extend(messages_of(exc, model, path, data, origin))
        return None, _salvage(model, data, exc)


def _related(path: str, other: str) -> bool:
    """One path is the other or inside it."""
    return any(
        a == b or a.startswith((b + ".", b + "[")) for a, b in ((path, other), (other, path))
    )


def _path_key(message: str) -> list[tuple[int, int | str]]:
    """Sorts a layer's messages by path, list items by index."""
    path = message.split(": ", 1)[0]
    return [(1, int(p)) if p.isdigit() else (0, p) for p in re.split(r"[.\[\]]+", path) if p]


def _checked(errors: S.Errors, build: Callable[[], T], valid: bool) -> T | None:
    """build() on a section; on a salvaged one, its messages at the paths pydantic already
    reported are dropped and its result too."""
    if valid:
        return build()
    before = list(errors.messages)
    reported = {m.split(": ", 1)[0] for m in before}
    build()
    errors.messages[:] = before + [
        m
        for m in errors.messages[len(before) :]
        if not any(_related(m.split(": ", 1)[0], p) for p in reported)
    ]
    return None


def _entries(errors: S.Errors, data: Any, key: str) -> dict[str, Any]:
    """The named entries of grids/caches/layers (names checked)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(key, f"expected a mapping, got {describe(value)}")
        return {}
    entries = {}
    for name, entry in value.items():
        if not _NAME_RE.match(str(name)):
            msg = f"invalid name {str(name)!r}: use letters, digits, '_', '-' and '.'"
            errors.add(f"{key}.{name}", msg)
        else:
            entries[str(name)] = entry
    return entries


def _layer_origins(defaults: Mapping[str, Any], value: Any) -> dict[str, str]:
    origin = {k: "layer_default" for k in defaults if k not in (value or {})}
    if isinstance(value, MergedDict):
        origin.update({k: "defaults" for k in value.merged})
    return origin


def _section_model(annotation: Any) -> Any:
    """The model of a `Document` field that is one section (`X` or `X | None`), else None
    (the named entries of `grids`, `caches`, `layers`, a value)."""
    if typing.get_origin(annotation) is dict:
        return None
    for arg in getattr(annotation, "__args__", (annotation,)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


# From the one description of the document: its sections of their own (each one model).
_SECTIONS = tuple(k for k, f in Document.model_fields.items() if _section_model(f.annotation))


def parse_config(data: Any, base_dir: Path, source: Path | None = None) -> Config:
    """Validates a parsed YAML document; raises ConfigError listing every mistake."""
    errors = S.Errors()
    if not isinstance(data, dict):
        raise ConfigError([f": expected a mapping, got {describe(data)}"])
    allowed = [k for k, f in Document.model_fields.items()
               if not isinstance(f.json_schema_extra, dict)]  # fmt: skip
    for key in data:
        if str(key) not in Document.model_fields:
            errors.add(str(key), unknown_key(str(key), allowed))
    for key in ("grids", "layers"):
        if data.get(key) is None:
            errors.add(key, "missing required section")

    # Sections of their own.
    def section(key: str) -> Any:
        field = Document.model_fields[key]
        model = _section_model(field.annotation)
        if data.get(key) is None:
            return field.get_default(call_default_factory=True)
        return _validate(errors, model, data[key], key)[0]

    simple = {key: section(key) for key in _SECTIONS}
    queue_store = data.get("queue_store")
    if queue_store is not None and not isinstance(queue_store, str):
        errors.add("queue_store", f"expected a string, got {describe(queue_store)}")
        queue_store = None

    grid_docs: dict[str, GridDoc | None] = {}
    grids: dict[str, Grid] = {}
    for name, value in _entries(errors, data, "grids").items():
        grid_doc, salvaged = _validate(errors, GridDoc, value, f"grids.{name}")
        grid_docs[name] = grid_doc
        if salvaged is not None:
            grid = _checked(errors, partial(S.build_grid, errors, name, salvaged),
                            grid_doc is not None)  # fmt: skip
            if grid is not None:
                grids[name] = grid
    cache_docs = {n: _validate(errors, CacheDoc, v, f"caches.{n}")[0]
                  for n, v in _entries(errors, data, "caches").items()}  # fmt: skip
    caches = {}
    for name, cache_doc in cache_docs.items():
        if cache_doc is not None and (cache := C.build_cache(errors, name, cache_doc)) is not None:
            caches[name] = cache
    refused_caches = {n: d.type for n, d in cache_docs.items()
                      if d is not None and d.type in C.TCC_CACHE_TYPES}  # fmt: skip

    g = simple["generation"]
    generation = S.build_generation(errors, g, queue_store) if g is not None else None
    server = S.build_server(errors, simple["server"]) if simple["server"] is not None else None
    memcached = None
    if simple["memcached"] is not None:
        memcached = C.build_memcached(errors, simple["memcached"])
    mapcache: MapcacheDoc | None = simple["mapcache"]
    if mapcache is not None and mapcache.memcache_host:
        if data.get("memcached") is None:
            port = mapcache.memcache_port or 11211
            memcached = C.build_memcached(
                errors, MemcachedDoc(servers=[f"{mapcache.memcache_host}:{port}"])
            )
        else:
            errors.warn("mapcache.memcache_host", "ignored: `memcached.servers` is set")
    sqs = S.build_sqs(errors, simple["sqs"]) if simple["sqs"] is not None else None
    sns = S.build_sns(errors, simple["sns"]) if simple["sns"] is not None else None
    redis = S.build_redis(errors, simple["redis"]) if simple["redis"] is not None else None
    r = simple["redis_cache"]
    redis_cache = C.build_redis_cache(errors, r) if r is not None else None
    C.check_tile_cache(errors, server, data, memcached is not None, redis_cache is not None)

    # Cross-references.
    default_cache = generation.default_cache if generation is not None else None
    if generation is not None:
        if generation.queue is not None and data.get(generation.queue) is None:
            where = "generation.queue" if g.queue else "queue_store"
            errors.add(where, f"{generation.queue!r} needs a `{generation.queue}` section (see "
                              "the README, 'Generation across many machines')")  # fmt: skip
        elif generation.queue is None and sqs is not None and redis is not None:
            errors.add("generation.queue", "both `sqs` and `redis` are set: say which one "
                       f"distributed generation uses ({' or '.join(QUEUE_TYPES)})")  # fmt: skip
        if default_cache is not None and default_cache not in cache_docs:
            errors.add(
                "generation.default_cache",
                f"unknown cache {default_cache!r} (defined: {S.names_of(cache_docs)})",
            )

    # Layers: layer_default and YAML anchors merged into each, then checked.
    layer_default = data.get("layer_default") or {}
    if not isinstance(layer_default, dict):
        errors.add("layer_default", f"expected a mapping, got {describe(layer_default)}")
        layer_default = {}
    connection = simple["postgresql"].connection if simple["postgresql"] is not None else ""
    layers: dict[str, Layer] = {}
    layer_docs: dict[str, LayerDoc] = {}
    left_out: dict[str, str] = {}
    no_effect: dict[str, list[str]] = {}
    layer_entries = _entries(errors, data, "layers")
    all_grids = {**dict.fromkeys(grid_docs), **grids}
    all_caches = {**dict.fromkeys(cache_docs), **caches}

    def one_layer(name: str, value: Any) -> None:
        path = f"layers.{name}"
        if value is not None and not isinstance(value, dict):
            errors.add(path, f"expected a mapping, got {describe(value)}")
            return
        merged = {**layer_default, **(value or {})}
        origin = _layer_origins(layer_default, value)
        doc, salvaged = _validate(errors, LayerDoc, merged, path, origin)

        def build(d: LayerDoc) -> Layer | None:
            return build_layer(errors, name, d, origin, all_grids, all_caches, base_dir,
                               default_cache, connection)  # fmt: skip

        if doc is None:
            if salvaged is not None and not is_utfgrid(salvaged):
                _checked(errors, lambda: build(salvaged), valid=False)
            return
        if is_utfgrid(doc):
            left_out[name] = UTFGRID
            errors.warn(path, f"{UTFGRID} is a TileCloud-chain feature tileserver does not "
                              "offer: the layer is left out")  # fmt: skip
            return
        cache_name = doc.cache if doc.cache is not None else default_cache
        if cache_name in refused_caches:
            left_out[name] = f"its cache {cache_name!r}"
            errors.add(
                f"caches.{cache_name}.type",
                f"{refused_caches[cache_name]!r} is a TileCloud-chain cache type tileserver "
                f"does not offer (supported: {', '.join(CACHE_TYPES)}); used by layer {name!r}",
            )
            return
        layer_docs[name] = doc
        found: dict[str, list[str]] = {}
        keys_without_effect(doc, "", found)
        for key in found:
            no_effect.setdefault(key, []).append(name)
        layer = build(doc)
        if layer is not None:
            layers[name] = layer

    for name, value in layer_entries.items():
        first = len(errors.messages)
        one_layer(name, value)
        errors.messages[first:] = sorted(errors.messages[first:], key=_path_key)
    C.check_cache_users(caches, layers, errors)
    for name, kind in refused_caches.items():
        if not any(f"caches.{name}.type:" in m for m in errors.messages):
            errors.warn(f"caches.{name}.type", f"{kind!r} is a TileCloud-chain cache type "
                        "tileserver does not offer; no layer uses it, it is left out")  # fmt: skip
    if isinstance(data.get("layers"), dict) and not data["layers"]:
        errors.add("layers", "no layer defined")
    default_layers: tuple[str, ...] = ()
    if generation is not None and data.get("layers") is not None:
        for i, name in enumerate(generation.default_layers):
            if name in left_out:
                errors.add(f"generation.default_layers[{i}]",
                           f"layer {name!r} is left out: {left_out[name]}")  # fmt: skip
            elif name not in layers and name not in layer_entries:
                errors.add(f"generation.default_layers[{i}]",
                           f"unknown layer {name!r} (defined: {S.names_of(layers)})")  # fmt: skip
        # TileCloud-chain's rule: without default_layers, generate_tiles renders every layer.
        default_layers = generation.default_layers or tuple(layers)

    warn_without_effect(errors, no_effect, simple, data)
    metadata_doc = simple["metadata"]
    if metadata_doc is not None and metadata_doc.servicetype not in (None, "OGC WMTS"):
        errors.warn("metadata.servicetype", "ignored: a WMTS's service type is 'OGC WMTS'")

    if errors.messages:
        raise ConfigError(errors.messages)
    errors.warnings[:] = grouped(errors.warnings)
    assert generation is not None and server is not None
    metadata, postgresql, upstream = S.build_simple(simple)
    document = Document.model_construct(
        grids={n: d for n, d in grid_docs.items() if d is not None},
        caches={n: d for n, d in cache_docs.items() if d is not None},
        layers=layer_docs,
        **{k: v for k, v in simple.items() if v is not None},
    )
    return Config(
        grids=grids,
        caches=caches,
        layers=layers,
        generation=dataclasses.replace(generation, default_layers=default_layers),
        server=server,
        memcached=memcached,
        redis_cache=redis_cache,
        metadata=metadata,
        provider=S.build_provider(simple["provider"]),
        cost=S.build_cost(simple["cost"]),
        postgresql=postgresql,
        upstream=upstream,
        sqs=sqs,
        sns=sns,
        redis=redis,
        source=source,
        warnings=tuple(errors.warnings),
        document=document,
    )
