"""A layer's WMS source (`type: wms`): its keys checked, or refused on a layer of
another type, and its `WmsSource`."""

from __future__ import annotations

import re
from collections.abc import Mapping

from tileserver.config.doc_fields import WMS_MARK
from tileserver.config.layer_document import LayerDoc
from tileserver.config.layer_model import (
    DEFAULT_INFO_FORMATS,
    WMS_VERSIONS,
    WmsSource,
    info_extension,
)
from tileserver.config.sections import Scope, texts

WMS_RESERVED = {
    "service", "request", "version", "layers", "bbox", "width", "height", "srs", "crs",
    "query_layers", "info_format", "i", "j", "x", "y",
}  # fmt: skip
WMS_KEYS = tuple(
    k for k, f in LayerDoc.model_fields.items()
    if isinstance(f.json_schema_extra, dict) and WMS_MARK in f.json_schema_extra
)  # fmt: skip


def wms_source(s: Scope, doc: LayerDoc) -> WmsSource | None:
    if doc.type != "wms":
        for key in WMS_KEYS:
            if key not in doc.model_fields_set:
                continue
            if key in s.origin or key == "info_formats":
                # TileCloud-chain accepts info_formats on every layer, and drops the keys an
                # anchor brings into a layer of another type.
                s.warn(key, f"ignored: only for layers of type 'wms' (this layer is of type "
                            f"{doc.type!r}), as TileCloud-chain does")  # fmt: skip
            else:
                s.error(key, f"only for layers of type 'wms' (this layer is of type {doc.type!r})")
        return None
    for key in ("url", "layers"):
        if getattr(doc, key) is None:
            s.error(key, "missing required key")
    if doc.url is not None and not re.match(r"^https?://[^/\s]+", doc.url):
        s.error("url", f"expected an http:// or https:// URL, got {doc.url!r}")
    if doc.version not in WMS_VERSIONS:
        s.error("version", f"expected one of {', '.join(WMS_VERSIONS)}, got {doc.version!r}")
    for name in doc.params:
        if name.lower() in WMS_RESERVED:
            s.error(f"params.{name}", "set by tileserver for each request; remove it from params")
    info_formats = texts(doc.info_formats)
    if doc.info_formats is not None and not doc.query_layers:
        s.error("info_formats", "needs query_layers (the WMS layers GetFeatureInfo queries)")
    by_extension: dict[str, str] = {}
    for info_format in info_formats:
        other = by_extension.setdefault(info_extension(info_format), info_format)
        if other != info_format:
            ext = info_extension(info_format)
            s.error("info_formats", f"{other!r} and {info_format!r} would share the REST "
                                    f"extension '.{ext}': keep one")  # fmt: skip

    def pairs(mapping: Mapping[str, str | int | float | bool]) -> tuple[tuple[str, str], ...]:
        return tuple(
            sorted(
                (str(k), ("TRUE" if v else "FALSE") if isinstance(v, bool) else str(v))
                for k, v in mapping.items()
            )
        )

    if s.failed or doc.url is None or doc.layers is None:
        return None
    return WmsSource(
        url=doc.url,
        layers=doc.layers,
        version=doc.version,
        params=pairs(doc.params),
        headers=pairs(doc.headers),
        generate_salt=doc.generate_salt,
        timeout=doc.timeout,
        retries=doc.retries,
        query_layers=doc.query_layers,
        info_formats=info_formats or (DEFAULT_INFO_FORMATS if doc.query_layers else ()),
    )
