"""`--dump-config`: the configuration as the plain data of a YAML document, from the
validated document of `document.py` (so it names exactly the keys the schema does)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tileserver.config.doc_fields import NO_EFFECT_MARK, UTFGRID_MARK
from tileserver.config.model import Config


def _effective(model: type[BaseModel]) -> set[str]:
    """The fields of model that have an effect here."""
    return {
        name
        for name, field in model.model_fields.items()
        if not (
            isinstance(field.json_schema_extra, dict)
            and ({NO_EFFECT_MARK, UTFGRID_MARK} & set(field.json_schema_extra))
        )
    }


def _plain(doc: BaseModel) -> dict[str, Any]:
    """doc's keys with effect, defaults written out, unset optional keys left out."""
    data: dict[str, Any] = {}
    for name in sorted(_effective(type(doc)), key=list(type(doc).model_fields).index):
        value = getattr(doc, name)
        if isinstance(value, BaseModel):
            value = _plain(value)
        elif isinstance(value, dict):
            value = {k: _plain(v) if isinstance(v, BaseModel) else v for k, v in value.items()}
        elif isinstance(value, list):
            value = [_plain(v) if isinstance(v, BaseModel) else v for v in value]
        # An empty default is left out unless set: a filesystem cache has no `region`.
        if value is not None and (value not in ("", [], {}) or name in doc.model_fields_set):
            data[name] = value
    return data


def config_data(config: Config) -> dict[str, Any]:
    """The configuration as the plain data of a YAML document that reads back into an equal
    Config from any folder: every default written out, `layer_default` and YAML anchors
    merged into the layers, files as absolute paths, TileCloud-chain's spellings as
    tileserver's (cost.request_per_layers, mapcache's Memcached, queue_store)."""
    doc = config.document
    data: dict[str, Any] = {
        key: _plain(value) if isinstance(value, BaseModel) else value
        for key, value in ((k, getattr(doc, k, None)) for k in ("generation", "server",
            "redis_cache", "metadata", "provider", "cost", "postgresql", "upstream", "sqs", "sns",
            "redis"))
        if value is not None
    }  # fmt: skip
    data["grids"] = {name: _plain(grid) for name, grid in doc.grids.items()}
    data["caches"] = {}
    for name, cache in config.caches.items():
        plain = _plain(doc.caches[name])
        for key in ("hosts", "host"):
            plain.pop(key, None)  # expanded into the URLs below
        plain.update(http_url=cache.http_url, http_urls=list(cache.http_urls))
        if cache.type == "s3":
            plain["endpoint_url"] = cache.endpoint_url
        data["caches"][name] = plain
    data["layers"] = {}
    for name, layer in config.layers.items():
        plain = _plain(doc.layers[name])
        if layer.mapfile is not None:
            plain["mapfile"] = str(layer.mapfile)
        for geom, entry in zip(layer.geoms, plain.get("geoms", []), strict=True):
            if geom.file is not None:
                entry["file"] = str(geom.file)
        plain.pop("grid", None)
        plain["grids"] = list(layer.grid_names)
        plain.update(mime_type=layer.mime_type, output_format=layer.output_format)
        if layer.cache is not None:
            plain["cache"] = layer.cache
        data["layers"][name] = plain
    generation = data.setdefault("generation", {})
    generation.update(default_layers=list(config.generation.default_layers))
    if config.generation.queue is not None:
        generation["queue"] = config.generation.queue
    data["cost"]["requests_per_month"] = config.cost.requests_per_month
    data["cost"].pop("request_per_layers", None)
    if config.memcached is not None:
        m = config.memcached
        data["memcached"] = {
            "servers": [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in m.servers],
            "prefix": m.prefix,
            "timeout": m.timeout,
            "pool_size": m.pool_size,
            "retry_interval": m.retry_interval,
            "lock_timeout": m.lock_timeout,
            "lock_lease": m.lock_lease,
        }
    return data
