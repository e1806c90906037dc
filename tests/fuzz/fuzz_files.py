"""The fuzzed site's files and backends: its configuration, the tiles of its store, the
secrets placed beside and above the store that no answer may hold, the deterministic
renderer's images, and the log handlers that catch any error the server logs."""

from __future__ import annotations

import functools
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from PIL import Image, PngImagePlugin

from tests.support.configs import mercator_grid
from tileserver.config import Layer
from tileserver.log_format import JsonFormatter
from tileserver.store_layout import tile_path
from tileserver.types import TileCoord
from tileserver.web.handlers import static_dir

# --- the site: config, store, secrets, backends ------------------------------------------------

MERC_RES = mercator_grid()["resolutions"]
SEED_LEVEL = 4  # layer `stored`: levels 0..4 come from the store, finer ones are rendered
MONACO = [824000, 5421800, 829500, 5428000]
INFO_FORMATS = ["text/plain", "application/json", "text/html"]

# Files the server must never answer with a byte of.
SECRET_UP = b"FUZZ-SECRET-ABOVE-THE-STORE-FOLDER-1c9e"
SECRET_BESIDE = b"FUZZ-SECRET-BESIDE-THE-STORE-5b27"
SECRET_DECOY = b"FUZZ-SECRET-DECOY-TILE-OUTSIDE-THE-STORE-88d1"
CONFIG_MARKER = b"FUZZ-CONFIG-FILE-MARKER-3f0a"
PACKAGE_MARKERS = (b'"""The HTTP face: WMTS KVP', b"[tool.ruff]", b"root:x:0:0:")
MARKERS = (SECRET_UP, SECRET_BESIDE, SECRET_DECOY, CONFIG_MARKER, *PACKAGE_MARKERS)

ROUTE = "X-Fuzz-Route"  # test instrumentation: the route that answered (none: the parser)
WMTS_ROUTES = {"/wmts", "/wmts/", "/wmts/1.0.0/WMTSCapabilities.xml", "/wmts/1.0.0/{path}"}
FEATURE_INFO = b"FUZZ-FEATUREINFO "

# (exceptionCode, HTTP status) pairs of WMTS 1.0.0 (07-057r7, table 28) and OWS 1.1
# (06-121r3, 8.5) the server may answer a client's mistake with. NoApplicableCode
# (a backend failure) is absent: the backends here never fail.
WMTS_EXCEPTIONS = {
    ("MissingParameterValue", 400),
    ("InvalidParameterValue", 400),
    ("TileOutOfRange", 400),
    ("PointIJOutOfRange", 400),
    ("VersionNegotiationFailed", 400),
    ("OperationNotSupported", 501),
    ("NotFound", 404),
}
PARAMETERS = ("service", "request", "version", "layer", "style", "format", "tilematrixset",
              "tilematrix", "tilerow", "tilecol", "infoformat", "i", "j",
              "acceptversions")  # fmt: skip
ECHO = 200  # characters of one client value a report may show (80 in texts, 200 in paths)
INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # xs:integer, ASCII digits; the server caps at 18
REG_NAME = re.compile(rb"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def _image(color: tuple[int, ...], kind: str, text: bytes | None = None) -> bytes:
    out = io.BytesIO()
    info = None
    if text is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("secret", text.decode())
    mode = "RGB" if kind == "JPEG" else "RGBA"
    Image.new(mode, (256, 256), color).save(out, kind, pnginfo=info)
    return out.getvalue()


RENDERED_PNG = _image((10, 120, 200, 255), "PNG")
RENDERED_JPEG = _image((200, 120, 10), "JPEG")
STORED_PNG = _image((30, 160, 60, 255), "PNG")
DECOY_PNG = _image((255, 0, 0, 255), "PNG", SECRET_DECOY)
TILES = {RENDERED_PNG: "image/png", RENDERED_JPEG: "image/jpeg", STORED_PNG: "image/png"}


@functools.lru_cache(maxsize=8)
def decoded_type(data: bytes) -> str:
    """The content type of a 256x256 image Pillow decodes; AssertionError for anything else."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.size == (256, 256), image.size
        return {"PNG": "image/png", "JPEG": "image/jpeg"}[str(image.format)]


def _config_data(root: Path) -> dict[str, Any]:
    mapnik = {"type": "mapnik", "mapfile": "style.xml"}
    return {
        "grids": {
            "merc": mercator_grid(),
            "lv95": {
                "srs": "EPSG:2056",
                "bbox": [2420000, 1030000, 2900000, 1350000],
                "resolutions": [4000, 1000, 250, 100, 10, 1, 0.5],
                "matrix_identifier": "resolution",
            },
        },
        "caches": {"tiles": {"type": "filesystem", "folder": str(root / "store")}},
        "layers": {
            "plain": {**mapnik, "grid": "merc", "bbox": MONACO},
            "timed": {
                **mapnik,
                "grid": "merc",
                "extension": "jpeg",
                "wmts_style": "natural",
                "dimensions": [
                    {"name": "TIME", "values": ["2020", "2021"], "default": "2021"},
                    {"name": "Elevation", "values": ["low", "high"], "default": "low"},
                ],
            },
            "stored": {
                **mapnik,
                "grid": "merc",
                "cache": "tiles",
                "min_resolution_seed": MERC_RES[SEED_LEVEL],
                "missing_tile": "no_content",
            },
            "info": {
                "type": "wms",
                "url": "http://127.0.0.1:9/wms",
                "layers": "osm",
                "grid": "merc",
                "bbox": MONACO,
                "query_layers": "buildings",
                "info_formats": INFO_FORMATS,
            },
            "swiss": {**mapnik, "grid": "lv95"},
        },
    }


def is_stored(coord: TileCoord) -> bool:
    """Which tiles of layer `stored` the store holds (the others answer 204)."""
    return coord.z == 0 or (coord.row + coord.col) % 2 == 0


def write_site(base: Path) -> Path:
    """The config file and the store under base/site, secrets beside and above; the
    config's path."""
    root = base / "site"
    store = root / "store"
    store.mkdir(parents=True)
    (base / "SECRET-above.txt").write_bytes(SECRET_UP)
    (root / "SECRET-beside.txt").write_bytes(SECRET_BESIDE)
    (root / "style.xml").write_text("<Map/>")
    config_path = root / "config.yaml"
    config_path.write_text(
        f"# {CONFIG_MARKER.decode()}\n" + yaml.safe_dump(_config_data(root), sort_keys=False)
    )
    for z in range(SEED_LEVEL + 1):
        for row in range(2**z):
            for col in range(2**z):
                path = tile_path("", "stored", "default", (), "merc", str(z), row, col, "png")
                # Decoys where a path escaping the store by one or two levels would look.
                for folder, data in ((base, DECOY_PNG), (root, DECOY_PNG), (store, STORED_PNG)):
                    if folder is store and not is_stored(TileCoord(z, row, col)):
                        continue
                    if folder is not store and z > 1:
                        continue
                    file = folder.joinpath(*path.split("/"))
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes(data)
    return config_path


def rendered(layer: Layer) -> bytes:
    """Every tile of a metatile, rendered: one pre-encoded image of the layer's format."""
    return RENDERED_JPEG if layer.mime_type == "image/jpeg" else RENDERED_PNG


class FixedFeatureInfo:
    async def feature_info(
        self, layer: Layer, coord: TileCoord, i: int, j: int, info_format: str
    ) -> tuple[bytes, str]:
        assert 0 <= i < layer.grid.tile_size and 0 <= j < layer.grid.tile_size
        return feature_info_body(layer.name, coord, i, j), info_format


def feature_info_body(layer: str, coord: TileCoord, i: int, j: int) -> bytes:
    return FEATURE_INFO + f"{layer} {coord.z}/{coord.row}/{coord.col} {i} {j}".encode()


async def expose_route(request: web.Request, response: web.StreamResponse) -> None:
    resource = request.match_info.route.resource
    response.headers[ROUTE] = "none" if resource is None else resource.canonical


class ErrorLog(logging.Handler):
    """Keeps the ERROR records of the server, except the parser's refusals of bad requests."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            self.records.append(record)


class AccessSink(logging.Handler):
    """Formats every access log line as the JSON log format would (keeping what fails to),
    then drops it."""

    def __init__(self, errors: ErrorLog) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            json.loads(self.format(record))
        except Exception:
            self.errors.records.append(record)


STATIC_FILES = sorted(p.relative_to(static_dir()).as_posix()
                      for p in static_dir().rglob("*") if p.is_file())  # fmt: skip
