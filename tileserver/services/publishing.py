"""Files published into a tile store beside the pre-generated tiles, so that clients can
use them straight from the store's public URL: the WMTS Capabilities of the stored
tiles, and an OpenLayers page that shows them (`generate_controller`)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources

from tileserver.config import CacheConfig, Config, Layer
from tileserver.protocols import TileStore
from tileserver.services.capabilities import store_capabilities

Files = dict[str, tuple[bytes, str]]  # the bytes and content type of files, by store path
OPENLAYERS_FOLDER = "openlayers"  # the page's script, style and vendored libraries


def capabilities_files(config: Config, layers: Sequence[Layer], cache: CacheConfig) -> Files:
    """The Capabilities of the layers' tiles in cache, at its `wmtscapabilities_file`."""
    document = store_capabilities(config, layers, cache)
    return {cache.wmtscapabilities_file: (document, "application/xml")}


def _replace_all(text: str, old: str, new: str, where: str) -> str:
    """text with every old replaced by new; RuntimeError where there is none (the server's
    demo page changed, and this copy of it must follow)."""
    if old not in text:
        raise RuntimeError(f"{where}: {old!r} not found")
    return text.replace(old, new)


def openlayers_files(capabilities_file: str) -> Files:
    """The OpenLayers page for a store, by path relative to the store's root, with its
    content type: the server's demo page (`tileserver/static`) reading the Capabilities
    at `capabilities_file`, its script, style and vendored libraries under `openlayers/`.
    Every URL in it is relative, so it works in any folder, offline."""
    static = resources.files("tileserver").joinpath("static")
    page = static.joinpath("index.html").read_text(encoding="utf-8")
    page = _replace_all(page, '"static/', f'"{OPENLAYERS_FOLDER}/', "index.html")
    page = _replace_all(
        page, "wmts/1.0.0/WMTSCapabilities.xml", html.escape(capabilities_file), "index.html"
    )
    script = static.joinpath("demo.js").read_text(encoding="utf-8")
    script = _replace_all(
        script,
        "'wmts/1.0.0/WMTSCapabilities.xml'",
        json.dumps(capabilities_file),
        "demo.js",
    )
    # A store has WMTS only: no protocol switch (OGC API, XYZ are the server's).
    script = _replace_all(script, "var SERVER_APIS = true;", "var SERVER_APIS = false;", "demo.js")
    vendor = static.joinpath("vendor")
    files: Files = {
        "index.html": (page.encode(), "text/html; charset=utf-8"),
        f"{OPENLAYERS_FOLDER}/demo.js": (script.encode(), "text/javascript; charset=utf-8"),
        f"{OPENLAYERS_FOLDER}/demo.css": (
            static.joinpath("demo.css").read_bytes(),
            "text/css; charset=utf-8",
        ),
    }
    for name, content_type in (
        ("ol.js", "text/javascript; charset=utf-8"),
        ("proj4.js", "text/javascript; charset=utf-8"),
        ("ol.css", "text/css; charset=utf-8"),
        ("LICENSE.ol.md", "text/markdown; charset=utf-8"),
        ("LICENSE.proj4.md", "text/markdown; charset=utf-8"),
    ):
        files[f"{OPENLAYERS_FOLDER}/vendor/{name}"] = (
            vendor.joinpath(name).read_bytes(),
            content_type,
        )
    return files


def _by_content_type(files: Files) -> dict[str, dict[str, bytes]]:
    grouped: dict[str, dict[str, bytes]] = {}
    for path, (data, content_type) in files.items():
        grouped.setdefault(content_type, {})[path] = data
    return grouped


async def publish(store: TileStore, files: Files) -> None:
    """Writes the files into an open store, one request per content type."""
    for content_type, items in _by_content_type(files).items():
        await store.put_many(items, content_type)
