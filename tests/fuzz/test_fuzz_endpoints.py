"""Property-based fuzzing of the HTTP face: random and hostile GET requests on every endpoint.

The real application (`create_app`) is served by aiohttp's TestServer on a loop in a
background thread, with fast real backends (the embedded MemoryCache, a FilesystemStore in
a temporary folder) and a deterministic renderer; requests are written byte for byte to a
socket, so hostile encodings (`%2e%2e`, `%2f`, `%00`, backslashes, overlong UTF-8, raw
bytes) reach the server's parser exactly as generated.

For every request (issue "Keep serving under faults, bad input and load"):

- never a 5xx, except WMTS's OperationNotSupported (501, 07-057r7 table 28) and one
  upstream aiohttp bug on paths without a route (see UPSTREAM_EXPECT_BUG);
- a success is a tile from the renderer or the store (exact bytes, 256x256, the right
  content type), the Capabilities, a FeatureInfo body, the demo page, a health answer or a
  file that really is under tileserver/static; no body ever holds a byte of the files
  placed beside and above the store, of the config file, or of the package's sources;
- a 4xx (or the 501) on a WMTS route is a schema-valid OWS ExceptionReport whose
  exceptionCode/status pair is WMTS's, whose locator names a parameter (never echoes the
  client) and which shows at most `_ECHO` characters of any client value;
- a request the HTTP parser refuses (over-long request line or header, bytes HTTP forbids)
  gets a 400 and the server keeps answering;
- where the request's effect is known (see `kvp_outcome`, `rest_outcome`: a reference
  model of WMTS 1.0.0 KVP/REST written from the standard), the answer is exactly that:
  a valid request gets its tile, a request with any invalid value gets a report.

Examples are derandomized (hypothesis seeds from the test function), so CI runs the same
10,000+ cases every time and a failure reproduces; TILESERVER_FUZZ_EXPLORE=1 explores with
random seeds and ten times as many examples instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
import yaml
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from lxml import etree
from PIL import Image, PngImagePlugin

from tests.support.configs import mercator_grid
from tests.support.fakes import FakeRenderer
from tests.support.schemas import validate_capabilities, validate_exception_report
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.adapters.memory_cache import MemoryCache
from tileserver.config import FORMATS, Config, Layer, info_extension
from tileserver.config_loader import load_config
from tileserver.log_format import JsonFormatter
from tileserver.store_layout import tile_path
from tileserver.types import TileCoord
from tileserver.web.access_log import ACCESS_LOGGER, AccessLogger
from tileserver.web.app import create_app
from tileserver.web.handlers import static_dir

# --- budget ---------------------------------------------------------------------------------

_EXPLORE = os.environ.get("TILESERVER_FUZZ_EXPLORE") == "1"
EXAMPLES = {"kvp": 4000, "rest": 3000, "paths": 1500, "raw": 1000, "headers": 600}
assert sum(EXAMPLES.values()) >= 10_000  # the issue asks for 10,000 generated cases in CI


def _settings(name: str) -> settings:
    return settings(
        max_examples=EXAMPLES[name] * (10 if _EXPLORE else 1),
        deadline=None,
        derandomize=not _EXPLORE,
        database=None if not _EXPLORE else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


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
_ECHO = 200  # characters of one client value a report may show (80 in texts, 200 in paths)
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # xs:integer, ASCII digits; the server caps at 18
_REG_NAME = re.compile(rb"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


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
def _decoded_type(data: bytes) -> str:
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


def _is_stored(coord: TileCoord) -> bool:
    """Which tiles of layer `stored` the store holds (the others answer 204)."""
    return coord.z == 0 or (coord.row + coord.col) % 2 == 0


def _write_site(base: Path) -> Path:
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
                    if folder is store and not _is_stored(TileCoord(z, row, col)):
                        continue
                    if folder is not store and z > 1:
                        continue
                    file = folder.joinpath(*path.split("/"))
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes(data)
    return config_path


def _rendered(layer: Layer) -> bytes:
    """Every tile of a metatile, rendered: one pre-encoded image of the layer's format."""
    return RENDERED_JPEG if layer.mime_type == "image/jpeg" else RENDERED_PNG


class FixedFeatureInfo:
    async def feature_info(
        self, layer: Layer, coord: TileCoord, i: int, j: int, info_format: str
    ) -> tuple[bytes, str]:
        assert 0 <= i < layer.grid.tile_size and 0 <= j < layer.grid.tile_size
        return _feature_info_body(layer.name, coord, i, j), info_format


def _feature_info_body(layer: str, coord: TileCoord, i: int, j: int) -> bytes:
    return FEATURE_INFO + f"{layer} {coord.z}/{coord.row}/{coord.col} {i} {j}".encode()


async def _expose_route(request: web.Request, response: web.StreamResponse) -> None:
    resource = request.match_info.route.resource
    response.headers[ROUTE] = "none" if resource is None else resource.canonical


class _ErrorLog(logging.Handler):
    """Keeps the ERROR records of the server, except the parser's refusals of bad requests."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            self.records.append(record)


class _AccessSink(logging.Handler):
    """Formats every access log line as the JSON log format would (keeping what fails to),
    then drops it."""

    def __init__(self, errors: _ErrorLog) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            json.loads(self.format(record))
        except Exception:
            self.errors.records.append(record)


# --- a client that writes requests byte for byte ----------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    version: bytes = b"HTTP/1.1"

    @property
    def route(self) -> str | None:
        return self.headers.get(ROUTE.lower())

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


class _Closed(Exception):
    """The server closed the connection without answering."""


class Connection:
    """One HTTP/1.1 keep-alive connection to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._sock: socket.socket | None = None
        self._file: io.BufferedReader | None = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._file = None

    def exchange(self, request: bytes, head: bool = False) -> Answer:
        """Sends one request, reads its answer; a second try on a fresh connection when a
        kept-alive one turns out closed."""
        for attempt in (1, 2):
            reused = self._sock is not None
            if self._sock is None:
                self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                self._file = self._sock.makefile("rb")
            try:
                # Refused part-way (an oversized request)? Its answer was sent first.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._sock.sendall(request)
                answer = self._read(head)
            except (_Closed, ConnectionError):
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            if answer.headers.get("connection", "").lower() == "close" or answer.version in (
                b"HTTP/1.0",
                b"HTTP/0.9",
            ):
                self.close()
            return answer
        raise AssertionError("unreachable")

    def _read(self, head: bool) -> Answer:
        file = self._file
        assert file is not None
        code = 100
        while 100 <= code < 200:  # skips interim answers (100 Continue)
            line = file.readline(70000)
            if not line:
                raise _Closed()
            version, status, _ = line.split(b" ", 2)
            assert version.startswith(b"HTTP/"), line
            headers: dict[str, str] = {}
            while True:
                line = file.readline(70000)
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            code = int(status)
        if head or code in (204, 304):
            body = b""
        elif "content-length" in headers:
            body = file.read(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(file.readline(100).split(b";")[0], 16):
                body += file.read(size)
                file.readline(10)
            file.readline(10)
        else:
            body = file.read()
            headers["connection"] = "close"
        return Answer(code, headers, body, version)


def http_request(
    target: str | bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    host: bytes | None = b"127.0.0.1",
) -> bytes:
    """A request exactly as given (a str target must be ASCII: it is sent as is)."""
    raw = target.encode("ascii") if isinstance(target, str) else target
    lines = [method + b" " + raw + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# --- the site fixture and the properties ------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a correct server answers, where the request's meaning is known."""

    kind: str  # tile | info | capabilities | error
    layer: Layer | None = None
    coord: TileCoord | None = None
    pixel: tuple[int, int] | None = None


@dataclass(frozen=True)
class Sent:
    """One generated request: the bytes, the client's values (for the echo bound), and the
    expected outcome when the request's meaning is known."""

    request: bytes
    values: tuple[str, ...] = ()
    expect: Expect | None = None
    head: bool = False
    fresh: bool = False  # on a connection of its own (raw bytes may leave it unusable)

    def __repr__(self) -> str:
        kind = self.expect.kind if self.expect else "unknown"
        return f"Sent({self.request!r}, expect={kind})"


@dataclass
class Site:
    """The running server, the files it may answer with, and what the fuzzing met."""

    config: Config
    port: int
    errors: _ErrorLog
    static: dict[str, bytes]
    connection: Connection = field(init=False)
    outcomes: Counter[str] = field(default_factory=Counter)
    _capabilities_checked: set[bytes] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.connection = Connection(self.port)

    @property
    def index(self) -> bytes:
        return self.static["index.html"]

    def send(self, sent: Sent) -> Answer:
        if sent.fresh:
            connection = Connection(self.port)
            try:
                return connection.exchange(sent.request, sent.head)
            finally:
                connection.close()
        return self.connection.exchange(sent.request, sent.head)

    def check(self, sent: Sent) -> Answer:
        """Sends the request and checks every property of its answer."""
        answer = self.send(sent)
        outcome = self._check(sent, answer)
        if outcome == UPSTREAM_EXPECT_BUG:
            self.errors.records.clear()  # aiohttp logged its traceback before answering
        assert not self.errors.records, self._logged()
        self.outcomes[outcome] += 1
        if sent.expect is not None:
            self.outcomes["(answer checked against the reference model)"] += 1
        if currently_in_test_context():
            event(outcome)
        return answer

    def _logged(self) -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "server logged errors:\n" + "\n".join(
            formatter.format(r) for r in self.errors.records[:3]
        )

    def _check(self, sent: Sent, answer: Answer) -> str:
        body = answer.body
        for marker in MARKERS:
            assert marker not in body, f"the answer holds {marker!r}"
        route = answer.route
        target = sent.request.split(b" ", 2)[1]
        if route is None:  # refused by the HTTP parser, before any route
            assert answer.status == 400, answer
            assert sent.expect is None or len(target) > 8190, "a valid request refused"
            return "refused by the parser"
        assert len(target) <= 8190, "a request line over the bound was served"
        if answer.status == 500 and route == "none" and _expects_non_utf8(sent.request):
            return UPSTREAM_EXPECT_BUG
        assert answer.status < 500 or (answer.status == 501 and route in WMTS_ROUTES), answer
        if answer.status in (200, 204, 206, 304):
            outcome = self._check_success(sent, answer, route)
        else:
            outcome = self._check_failure(sent, answer, route)
        if sent.expect is not None:
            expected = sent.expect.kind
            got = outcome.split()[0]
            assert got == expected, f"expected {expected}, got {outcome}"
            if expected == "tile":
                self._check_tile_source(sent.expect, answer)
            if expected == "info" and not sent.head:
                assert sent.expect.layer and sent.expect.coord and sent.expect.pixel
                assert body == _feature_info_body(
                    sent.expect.layer.name, sent.expect.coord, *sent.expect.pixel
                )
        return outcome

    def _check_success(self, sent: Sent, answer: Answer, route: str) -> str:
        body, status, content_type = answer.body, answer.status, answer.content_type
        if sent.head or status == 304:
            assert body == b""
        if route in WMTS_ROUTES:
            assert status != 206
            if status == 204 or "x-tile-source" in answer.headers:
                assert status in (200, 204, 304)
                if status == 200 and not sent.head:
                    assert TILES.get(body) == content_type, (content_type, body[:64])
                    assert _decoded_type(body) == content_type
                if status == 204:
                    assert body == b"" and answer.headers["x-tile-source"] == "missing"
                if status in (200, 304):
                    assert (status == 304) == _not_modified(sent.request, answer.headers)
                return f"tile {status}"
            assert status == 200
            if content_type == "application/xml":
                if not sent.head:
                    self._check_capabilities(sent, body)
                return "capabilities"
            assert content_type in INFO_FORMATS, content_type
            assert sent.head or body.startswith(FEATURE_INFO)
            return "info"
        if route == "/":
            assert status in (200, 206, 304)
            assert sent.head or status == 304 or body in self.index
            assert status == 206 or sent.head or body in (self.index, b"")
            return f"index {status}"
        if route == "/static":
            if status == 200 and not sent.head:
                assert body in self.static.values(), "not a file of tileserver/static"
            if status == 206:
                assert any(body in data for data in self.static.values())
            return f"static {status}"
        if route in ("/health", "/ready"):
            key = "ready" if route == "/ready" else "status"
            assert status == 200 and (sent.head or json.loads(body)[key])
            return route[1:]
        assert route == "/metrics" and status == 200, f"a {status} from route {route}"
        assert sent.head or body.startswith(b"# HELP")
        return "metrics"

    def _check_tile_source(self, expect: Expect, answer: Answer) -> None:
        layer, coord = expect.layer, expect.coord
        assert layer is not None and coord is not None
        source = answer.headers["x-tile-source"]
        if layer.name == "stored" and coord.z <= SEED_LEVEL:
            stored = _is_stored(coord)
            assert (answer.status != 204, source) == (stored, "store" if stored else "missing")
            assert answer.body in (STORED_PNG, b"")
        else:
            assert answer.status in (200, 304) and source in ("render", "memory", "coalesced")
            if answer.body:
                expected = _rendered(layer)
                assert answer.body == expected

    def _check_capabilities(self, sent: Sent, body: bytes) -> None:
        root = etree.fromstring(body)  # well-formed whatever the Host
        assert root.tag == "{http://www.opengis.net/wmts/1.0}Capabilities"
        # Documents differ only by the client's Host: validate the first few. The schema's
        # URL template pattern has no room for an IPv6 literal ('[::1]') or other odd
        # hosts: those documents are only checked to be well-formed.
        host = re.search(rb"\r\nHost: ([^\r]*)\r\n", sent.request)
        plain = host is not None and _REG_NAME.fullmatch(host.group(1)) is not None
        checked = self._capabilities_checked
        if plain and body not in checked and len(checked) < 8:
            validate_capabilities(body)
            checked.add(body)

    def _check_failure(self, sent: Sent, answer: Answer, route: str) -> str:
        status, body = answer.status, answer.body
        if route not in WMTS_ROUTES:
            assert 400 <= status < 500, f"{status} from route {route}"
            assert len(body) < 1000
            return f"{route} {status}"
        assert answer.content_type == "application/xml", answer
        if sent.head:
            return "error (HEAD)"
        validate_exception_report(body)
        report = etree.fromstring(body)
        ows = "{http://www.opengis.net/ows/1.1}"
        assert report.tag == f"{ows}ExceptionReport"
        (exception,) = report.findall(f"{ows}Exception")
        code = exception.get("exceptionCode")
        assert (code, status) in WMTS_EXCEPTIONS, (code, status)
        locator = exception.get("locator")
        if code == "NotFound":
            assert locator is None
        else:
            dimensions = {d.name.lower() for layer in self.config.layers.values()
                          for d in layer.dimensions}  # fmt: skip
            assert locator in (*PARAMETERS, *dimensions), locator
        text = exception.findtext(f"{ows}ExceptionText") or ""
        assert len(text) <= 510
        for value in sent.values:
            if len(value) > _ECHO:
                # As reports show a value: itself or its repr(), controls replaced.
                printable = "".join(c if c.isprintable() else "\ufffd" for c in value)
                for shown in (printable, repr(value)[1:-1]):
                    assert shown[: _ECHO + 1] not in text, "a long client value echoed whole"
        return f"error {code}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    config = load_config(_write_site(tmp_path_factory.mktemp("fuzz")))
    store = FilesystemStore(Path(config.caches["tiles"].folder))
    app = create_app(
        config,
        tile_cache=MemoryCache(64 * 1024 * 1024),
        # Asserts that only validated values reach a backend.
        renderer=FakeRenderer(image=_rendered, check_values=True),
        tile_stores={"tiles": store},
        feature_info=FixedFeatureInfo(),
    )
    app.on_response_prepare.append(_expose_route)
    errors = _ErrorLog()
    access = _AccessSink(errors)
    watched = [logging.getLogger(name) for name in ("aiohttp", "tileserver")]
    access_logger = logging.getLogger(ACCESS_LOGGER)
    saved = (access_logger.level, access_logger.propagate)
    for logger in watched:
        logger.addHandler(errors)
    access_logger.addHandler(access)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-server", daemon=True)
    thread.start()
    server = TestServer(
        app, host="127.0.0.1", access_log_class=AccessLogger, access_log=access_logger
    )
    asyncio.run_coroutine_threadsafe(server.start_server(), loop).result(30)
    files = {name: (static_dir() / name).read_bytes() for name in STATIC_FILES}
    assert server.port is not None
    running = Site(config, server.port, errors, files)
    try:
        yield running
    finally:
        running.connection.close()
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        for logger in watched:
            logger.removeHandler(errors)
        access_logger.removeHandler(access)
        access_logger.setLevel(saved[0])
        access_logger.propagate = saved[1]


# aiohttp (3.14.5) answers 500 to an `Expect` value that is not UTF-8: its default expect
# handler cannot encode its own 417 text (same kind as aio-libs/aiohttp#7715). The app's
# routes ignore Expect (`create_app`), so only paths without a route still get it; see
# test_expect_not_utf8_on_a_path_without_route.
UPSTREAM_EXPECT_BUG = "aiohttp 500: Expect not UTF-8, no route"


def _expects_non_utf8(request: bytes) -> bool:
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"expect":
            try:
                value.strip().decode()
            except UnicodeDecodeError:
                return True
    return False


def _header_lines(request: bytes, wanted: bytes) -> list[str]:
    """The values of every `wanted` line of a request (before its empty line)."""
    head = request.partition(b"\r\n\r\n")[0]
    values = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == wanted:
            values.append(value.decode("latin-1").strip())
    return values


def _not_modified(request: bytes, headers: Mapping[str, str]) -> bool:
    """RFC 9110, 13.1.2 and 13.1.3: a tile is not modified when If-None-Match (all its
    lines) names its ETag; without If-None-Match, when If-Modified-Since is a valid date,
    not in the future, no earlier than its Last-Modified."""
    lines = _header_lines(request, b"if-none-match")
    if lines:
        tags = [t.strip().removeprefix("W/") for line in lines for t in line.split(",")]
        return "*" in tags or headers["etag"] in tags
    since = _header_lines(request, b"if-modified-since")
    if not since or "last-modified" not in headers:
        return False
    try:
        date = parsedate_to_datetime(since[0])
    except (TypeError, ValueError):
        return False
    stamp = date.replace(tzinfo=date.tzinfo or UTC).timestamp()
    modified = parsedate_to_datetime(headers["last-modified"]).timestamp()
    return modified <= stamp <= time.time()


def _still_serving(site: Site) -> None:
    connection = Connection(site.port)
    try:
        answer = connection.exchange(http_request("/health"))
    finally:
        connection.close()
    assert answer.status == 200 and json.loads(answer.body) == {"status": "ok"}
    assert not site.errors.records, site._logged()


def _refused(site: Site, request: bytes) -> None:
    """The request is refused with a 400 before any route; beyond the socket buffers the
    server may reset the connection before the client has read that 400."""
    try:
        answer = site.check(Sent(request, fresh=True))
    except ConnectionResetError:
        assert len(request) > 200_000
    else:
        assert answer.status == 400 and answer.route is None, answer
    _still_serving(site)


# --- reference model: what a request means -----------------------------------------------------


def _integer_in(text: str | None, low: int, high: int) -> bool:
    return text is not None and _INTEGER.fullmatch(text) is not None and low <= int(text) <= high


def _tile_expect(
    layer: Layer,
    style: str | None,
    matrix_set: str | None,
    matrix: str | None,
    row: str | None,
    col: str | None,
    dimensions: Mapping[str, str],
) -> Expect:
    grid = layer.grid
    z = grid.zoom_of(matrix) if matrix is not None else None
    if style not in ("", layer.wmts_style) or matrix_set != grid.name or z is None:
        return Expect("error")
    limits = grid.limits(z, layer.bbox)
    if not (_integer_in(row, limits.min_row, limits.max_row)
            and _integer_in(col, limits.min_col, limits.max_col)):  # fmt: skip
        return Expect("error")
    for dimension in layer.dimensions:
        value = dimensions.get(dimension.name.lower(), "")
        if value and value not in dimension.values:
            return Expect("error")
    assert row is not None and col is not None
    return Expect("tile", layer, TileCoord(z, int(row), int(col)))


def _info_expect(
    tile: Expect, formats: Sequence[str], info_format: str | None, i: str | None, j: str | None
) -> Expect:
    layer = tile.layer
    if tile.kind != "tile" or layer is None or layer.wms is None or not layer.wms.query_layers:
        return Expect("error")
    size = layer.grid.tile_size
    if info_format not in formats or not (_integer_in(i, 0, size - 1)
                                          and _integer_in(j, 0, size - 1)):  # fmt: skip
        return Expect("error")
    assert i is not None and j is not None
    return Expect("info", layer, tile.coord, (int(i), int(j)))


def kvp_outcome(config: Config, items: Sequence[tuple[str, str]]) -> Expect:
    """The answer to KVP parameters (decoded) by WMTS 1.0.0: names case-insensitive
    (07-057r7, 8.1), the first of repeated parameters wins, values case-sensitive."""
    p: dict[str, str] = {}
    for name, value in items:
        p.setdefault(name.lower(), value)
    if p.get("service") != "WMTS":
        return Expect("error")
    if p.get("request") == "GetCapabilities":
        accept = p.get("acceptversions")
        ok = not accept or "1.0.0" in accept.split(",")
        return Expect("capabilities" if ok else "error")
    if p.get("request") not in ("GetTile", "GetFeatureInfo") or p.get("version") != "1.0.0":
        return Expect("error")
    layer = config.layers.get(p.get("layer", ""))
    if layer is None or p.get("format") != layer.mime_type:
        return Expect("error")
    names = ("style", "tilematrixset", "tilematrix", "tilerow", "tilecol")
    tile = _tile_expect(layer, *(p.get(n) for n in names), dimensions=p)
    if p.get("request") == "GetTile":
        return tile
    formats = layer.wms.info_formats if layer.wms else ()
    return _info_expect(tile, formats, p.get("infoformat"), p.get("i"), p.get("j"))


def rest_outcome(config: Config, path: str) -> Expect:
    """The answer to a (decoded) REST path relative to /wmts/1.0.0/ (07-057r7, 10.2)."""
    if path == "WMTSCapabilities.xml":
        return Expect("capabilities")
    segments = path.split("/")
    if len(segments) < 6 or "" in segments or "." not in segments[-1]:
        return Expect("error")
    last, _, extension = segments[-1].rpartition(".")
    layer = config.layers.get(segments[0])
    if layer is None:
        return Expect("error")
    count = 6 + len(layer.dimensions)
    dimensions = {d.name.lower(): v for d, v in zip(layer.dimensions, segments[2:], strict=False)}
    if len(segments) == count and FORMATS.get(extension) == layer.mime_type:
        return _tile_expect(layer, segments[1], *segments[-4:-1], last, dimensions)
    if len(segments) == count + 2:
        tile = _tile_expect(layer, segments[1], *segments[-6:-2], dimensions)
        formats = layer.wms.info_formats if layer.wms else ()
        info_format = {info_extension(f): f for f in formats}.get(extension)
        return _info_expect(tile, formats, info_format, last, segments[-2])
    return Expect("error")


# --- strategies ---------------------------------------------------------------------------------

HOSTILE = [
    "", " ", "0", "-0", "+0", "-1", "+1", "00", "01", "1e3", "1E3", "1.0", "1.", ".5", "0x10",
    "0b1", "0o7", "1_000", " 1", "1 ", "\t1", "1\n", "\n1", "1\r\n", "1\x00", "1\x0b",
    # Unicode digits (int() takes the Nd ones): Arabic-Indic, fullwidth, superscript, circled,
    # Roman numeral, mathematical bold, NKo.
    "\u0663", "\u0661\u0662", "\uff10", "\uff11\uff12", "\u00b2", "\u2460", "\u216b",
    "\U0001d7d7", "\u07c1",
    str(10**30), str(-(10**30)), str(2**63), str(2**63 - 1), str(-(2**63)), str(2**64),
    "9" * 18, "9" * 19, "0" * 17 + "1", "0" * 40 + "1", "NaN", "nan", "inf", "-inf",
    "Infinity", "None", "null", "true", "[]", "{}",
    "..", ".", "...", "../..", "../../etc/passwd", "..\\..\\", "%2e%2e", "%2E%2E%2F",
    "%252e%252e", "..%2f", "%2f", "/", "//", "\\", "\\\\", "\x00", "a\x00b", "%00", "\x01",
    "\x7f", "\x1b[31m", "\r\n", "\r\nX-Injected: 1", "\u0085", "\u2028",
    "é", "日本語", "Ω", "🗺️", "👨‍👩‍👧", "\ufeff", "\u202e", "\uffff", "\U0010ffff",
    "\u0130", "\u0131", "\u017f",  # dotted capital I, dotless i, long s
    "x" * 201, "x" * 2000, "9" * 3000, "é" * 500, "/" * 300, ".." * 500, "x" * 10_000,
    "<script>alert(1)</script>", "]]>", "&amp;", "'", '"', "%", "%%", "%zz", "%u002e", "+",
    ";", "=", "&", "?", "#", "${jndi:ldap://x}", "{{7*7}}", "%(x)s", "{0}", "$(id)", "`id`",
    "WMTS", "wmts", "GetTile", "GETTILE", "gettile", "GetCapabilities", "GetFeatureInfo",
    "GetMap", "1.0.0", "1.0", "2.0.0", "1.0.0,2.0.0", "default", "Default", "natural",
    "image/png", "IMAGE/PNG", "image/jpeg", "image/png; mode=8bit", "text/plain", "merc",
    "MERC", "lv95", "17", "4000", "4000.0", "0.5", ".5", "plain", "timed", "stored", "info",
    "swiss", "PLAIN", "2020", "2021", "low", "high", "png", "jpeg", "jpg", "txt", "json",
]  # fmt: skip
NAMES = ["service", "request", "version", "layer", "style", "format", "tilematrixset",
         "tilematrix", "tilerow", "tilecol", "infoformat", "i", "j", "acceptversions", "time",
         "elevation", "x", "", "servicé", "service\x00", "\u017fervice", "tilerow ",
         " tilerow"]  # fmt: skip

# Beyond the 8190-byte request line once in the URL: the parser must refuse them.
LONG = ["x" * 10_000, "9" * 9_000, "é" * 1_400, "../" * 3_000, "\x00" * 3_000]

hostile = st.one_of(
    st.sampled_from(HOSTILE + LONG),
    st.integers(-(10**40), 10**40).map(str),
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=5),
    st.text(max_size=30),
    st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE), st.sampled_from(HOSTILE)),
)

# How a value is written into a URL. The first three round-trip (aiohttp decodes them back to
# the value); "double" decodes to quote(value); the last two decode to something unknown.
_PARTIAL_SAFE = "/\\.:;=@!$'()*,~[]{}|^`\"<>"


def _overlong(text: str) -> str:
    """'.' and '/' as overlong two-byte UTF-8, the rest percent-encoded."""
    return quote(text, safe="").replace(".", "%C0%AE").replace("%2F", "%C0%AF")


ENCODINGS: dict[str, Callable[[str], str]] = {
    "quote": lambda v: quote(v, safe=""),
    "plus": quote_plus,
    "partial": lambda v: quote(v, safe=_PARTIAL_SAFE),
    "double": lambda v: quote(quote(v, safe=""), safe=""),
    "overlong": _overlong,
    "latin1": lambda v: quote(v.encode("latin-1", "replace"), safe=""),
}
# Per request, one palette: mostly encodings whose decoding is known (so that the request's
# meaning is known and its answer checked against `kvp_outcome` / `rest_outcome`).
KNOWN = ["quote", "quote", "plus", "partial", "partial", "double"]
palettes = st.sampled_from([KNOWN, KNOWN, [*KNOWN, "overlong", "latin1"]])
KNOWN_IN_PATHS = [e for e in KNOWN if e != "plus"]  # '+' is a '+' in a path, not a space
path_palettes = st.sampled_from(
    [KNOWN_IN_PATHS, KNOWN_IN_PATHS, ["quote", "partial", "double", "overlong", "overlong"]]
)


def _decoded(encoded: str, encoding: str, query: bool) -> str | None:
    """What aiohttp decodes an encoded value to, when that is known."""
    if encoding in ("overlong", "latin1"):
        return None
    return unquote_plus(encoded) if query else unquote(encoded)


def _case(name: str, how: str) -> str:
    if how == "dotless":  # U+0131 upper-cases to I but lower-cases to itself
        return name.replace("i", "\u0131").upper()
    if how == "random":
        return "".join(c.upper() if k % 3 else c for k, c in enumerate(name))
    return {"upper": name.upper(), "lower": name.lower(), "title": name.title(),
            "swap": name.swapcase()}[how]  # fmt: skip


cases = st.sampled_from(["upper", "upper", "lower", "title", "swap", "random", "dotless"])


@dataclass(frozen=True)
class Valid:
    """A valid GetTile or GetFeatureInfo as (lower-case name, value) pairs, and values just
    beside the valid ones (the limits of the matrix and of the tile, one past them)."""

    layer: Layer
    params: tuple[tuple[str, str], ...]
    near: Mapping[str, Sequence[str]]


@st.composite
def valid_tile(draw: st.DrawFn, config: Config, queryable: bool = False) -> Valid:
    names = [n for n, layer in config.layers.items()
             if not queryable or (layer.wms and layer.wms.query_layers)]  # fmt: skip
    layer = config.layers[draw(st.sampled_from(names))]
    grid = layer.grid
    last = len(grid.resolutions) - 1
    z = draw(st.one_of(st.integers(0, min(SEED_LEVEL + 1, last)), st.integers(0, last)))
    limits = grid.limits(z, layer.bbox)
    params = [
        ("layer", layer.name),
        ("style", draw(st.sampled_from([layer.wmts_style, layer.wmts_style, ""]))),
        ("format", layer.mime_type),
        ("tilematrixset", grid.name),
        ("tilematrix", grid.matrix_id(z)),
        ("tilerow", str(draw(st.integers(limits.min_row, limits.max_row)))),
        ("tilecol", str(draw(st.integers(limits.min_col, limits.max_col)))),
    ]
    for dimension in layer.dimensions:
        if draw(st.booleans()):
            params.append((dimension.name, draw(st.sampled_from([*dimension.values, ""]))))
    size = grid.tile_size
    if queryable:
        assert layer.wms is not None
        params.append(("infoformat", draw(st.sampled_from(layer.wms.info_formats))))
        params += [(name, str(draw(st.integers(0, size - 1)))) for name in ("i", "j")]

    def around(low: int, high: int) -> list[str]:
        return [str(v) for v in (low - 1, low, high, high + 1)] + [f"+{high}", f"0{low}"]

    pixel = around(0, size - 1)
    near = {
        "tilematrix": [grid.matrix_id(0), grid.matrix_id(last), str(last + 1), "-1", "0.0"],
        "tilerow": around(limits.min_row, limits.max_row),
        "tilecol": around(limits.min_col, limits.max_col),
        "i": pixel,
        "j": pixel,
    }
    return Valid(layer, tuple(params), near)


def _mutate(
    draw: st.DrawFn, pairs: list[tuple[str, str]], valid: Valid | None, kinds: Sequence[str]
) -> None:
    """Changes (name, value) pairs in place: 0 to 4 changes, none a third of the time."""
    for _ in range(draw(st.one_of(st.just(0), st.integers(1, 4), st.integers(1, 4)))):
        kind = draw(st.sampled_from(kinds))
        at = draw(st.integers(0, len(pairs) - 1)) if pairs else 0
        name = pairs[at][0] if pairs else ""
        if kind == "insert" or not pairs:
            pairs.insert(at, (draw(st.sampled_from(NAMES)), draw(hostile)))
        elif kind == "value":
            pairs[at] = (name, draw(hostile))
        elif kind == "near" and valid is not None and name.lower() in valid.near:
            pairs[at] = (name, draw(st.sampled_from(valid.near[name.lower()])))
        elif kind == "drop":
            del pairs[at]
        elif kind == "repeat":
            where = draw(st.integers(0, len(pairs)))
            pairs.insert(where, (_case(name, draw(cases)), draw(hostile)))
        elif kind == "case":
            pairs[at] = (_case(name, draw(cases)), pairs[at][1])
        elif kind == "value case":
            pairs[at] = (name, _case(pairs[at][1], draw(cases)))


@st.composite
def kvp_requests(draw: st.DrawFn, config: Config) -> Sent:
    request = draw(st.sampled_from(["GetTile", "GetTile", "GetFeatureInfo", "GetCapabilities"]))
    pairs: list[tuple[str, str]] = [("service", "WMTS"), ("request", request)]
    valid = None
    if request == "GetCapabilities":
        if draw(st.booleans()):
            pairs.append(("acceptversions", draw(st.sampled_from(["1.0.0", "2.0.0,1.0.0"]))))
    else:
        valid = draw(valid_tile(config, queryable=request == "GetFeatureInfo"))
        pairs += [("version", "1.0.0"), *valid.params]
    pairs = [(name.upper(), value) for name, value in draw(st.permutations(pairs))]
    _mutate(draw, pairs, valid, ["value", "value", "near", "near", "drop", "repeat", "case",
                                 "value case", "insert"])  # fmt: skip
    pieces, decoded, known = [], [], True
    palette = draw(palettes)
    for name, value in pairs:
        how = draw(st.sampled_from(palette))
        encoded_name, encoded_value = ENCODINGS[how](name), ENCODINGS[how](value)
        pieces.append(f"{encoded_name}={encoded_value}")
        key, text = _decoded(encoded_name, how, True), _decoded(encoded_value, how, True)
        if key is None or text is None:
            known = False
        else:
            decoded.append((key, text))
    path = draw(st.sampled_from(["/wmts", "/wmts/"]))
    target = path + "?" + "&".join(pieces)
    values = tuple(v for pair in pairs for v in pair)
    expect = kvp_outcome(config, decoded) if known else None
    return Sent(http_request(target), values, expect)


@st.composite
def rest_requests(draw: st.DrawFn, config: Config) -> Sent:
    info = draw(st.booleans())
    valid = draw(valid_tile(config, queryable=info))
    layer, params = valid.layer, dict(valid.params)
    pairs = [("layer", layer.name), ("style", params["style"] or layer.wmts_style)]
    pairs += [(d.name, params.get(d.name) or d.default) for d in layer.dimensions]
    pairs += [(name, params[name]) for name in ("tilematrixset", "tilematrix", "tilerow",
                                                "tilecol")]  # fmt: skip
    extension = layer.extension
    if info:
        pairs += [("j", params["j"]), ("i", params["i"])]
        extension = info_extension(params["infoformat"])
    _mutate(draw, pairs, valid, ["value", "near", "near", "drop", "insert", "value case"])
    segments = [value for _, value in pairs]
    if segments and draw(st.integers(0, 5)) == 0:
        extension = draw(st.sampled_from(
            ["", "PNG", "jpg", "jpeg", "png.png", "gml", "txt", "json", "html", "xml",
             "png%00", "png/", "png\\", "x" * 300, "png\n"]))  # fmt: skip
    if segments:
        segments[-1] += "." + extension
    pieces, decoded, known = [], [], True
    palette = draw(path_palettes)
    for segment in segments:
        how = draw(st.sampled_from(palette))
        pieces.append(ENCODINGS[how](segment))
        text = _decoded(pieces[-1], how, False)
        if text is None:
            known = False
        else:
            decoded.append(text)
    path = "/".join(decoded)
    if any(s in (".", "..") or "%" in s for s in path.split("/")):
        known = False  # dot segments and literal '%': left to the generic properties
    query = draw(st.sampled_from(["", "", "?", "?SERVICE=WMTS&REQUEST=GetCapabilities",
                                  "?x=" + quote("../" * 20), "?%00", "#frag"]))  # fmt: skip
    target = "/wmts/1.0.0/" + "/".join(pieces) + query
    expect = rest_outcome(config, path) if known else None
    return Sent(http_request(target), tuple(segments), expect)


STATIC_FILES = sorted(p.relative_to(static_dir()).as_posix()
                      for p in static_dir().rglob("*") if p.is_file())  # fmt: skip
TRAVERSALS = [
    "..", ".", "", "...", "%2e%2e", "%2E%2e", ".%2e", "%2e", "%2f", "%2F..", "%5c", "\\",
    "..\\..", "..%5c..", "%00", "%c0%ae%c0%ae", "%c0%af", "%e0%80%ae", "%252e%252e", "....//",
    "~", "*", "..%2f..%2fpyproject.toml", "vendor/..", "x/..", "./.", "..;",
]  # fmt: skip
OUTSIDE = [
    "web/app.py", "__init__.py", "tileserver", "templates/capabilities.xml.mako", "etc/passwd",
    "SECRET-beside.txt", "SECRET-above.txt", "config.yaml", "pyproject.toml", "static",
]  # fmt: skip
PREFIXES = [
    "/static/", "/static/", "/static/", "/static/vendor/", "/static", "/", "//", "///",
    "/./static/", "/%73tatic/", "/STATIC/", "/static%2f", "/static%2F..%2F", "/static/..",
    "/wmts/", "/wmts/1.0.0", "/wmts/2.0.0/", "/WMTS", "/wmts/1.0.0/WMTSCapabilities.xml/",
    "/health", "/ready", "/metrics", "/health/", "/favicon.ico", "/index.html", "/%2e%2e/",
    "/..", "/\\", "/%5c",
]  # fmt: skip
FILE_CHANGES = ["", "", "", "/", ".", "%00", "%00.png", "::$DATA", ";x", "?x=1", "#x", "~",
                ".bak", "%20", "%2e", "/..", "/."]  # fmt: skip


DETOURS = ["", "", "./", ".//", "vendor/../", "x/../", "%2e/", "vendor/%2e%2e/", "vendor/.%2e/",
           "../static/", "%2e%2e/static/", "vendor/../../static/"]  # fmt: skip


@st.composite
def static_files(draw: st.DrawFn) -> Sent:
    """A file of /static, through dot segments that may stay inside, with a suffix maybe."""
    name = draw(st.sampled_from(STATIC_FILES))
    detour = draw(st.sampled_from(DETOURS))
    change = draw(st.sampled_from(FILE_CHANGES))
    return Sent(http_request("/static/" + detour + name + change), (detour, name, change))


@st.composite
def other_paths(draw: st.DrawFn) -> Sent:
    """Escapes towards the package and the secrets, hostile pieces, and other paths."""
    prefix = draw(st.sampled_from(PREFIXES))
    pieces = draw(st.lists(st.one_of(
        st.sampled_from(STATIC_FILES), st.sampled_from(TRAVERSALS), st.sampled_from(OUTSIDE),
        hostile,
    ), max_size=4))  # fmt: skip
    if draw(st.booleans()):
        pieces.append(draw(st.sampled_from(STATIC_FILES)) + draw(st.sampled_from(FILE_CHANGES)))
    encoded = []
    for piece in pieces:
        how = draw(st.sampled_from(["as is", "as is", "as is", "quote", "double", "overlong"]))
        if how == "as is":  # keeps the piece's own escapes; encodes what HTTP forbids
            encoded.append(quote(piece, safe="%/\\.:;=@!$'()*,~+&[]?#"))
        else:
            encoded.append(ENCODINGS[how](piece))
    target = prefix + "/".join(encoded)
    return Sent(http_request(target), tuple(pieces))


TARGET_PREFIXES = [b"http://evil.example", b"http://127.0.0.1:1", b"*", b"", b"wmts",
                   b"\\\\host", b"https://[::1]"]  # fmt: skip


@st.composite
def raw_requests(draw: st.DrawFn, config: Config) -> Sent:
    """Requests as bytes, including what HTTP forbids in a request line or a header."""
    base = draw(
        st.one_of(kvp_requests(config), rest_requests(config), static_files(), other_paths())
    )
    target = base.request.split(b" ", 2)[1]
    at = draw(st.integers(0, len(target)))
    insert = draw(st.one_of(
        st.just(b""),
        st.sampled_from([b"\x00", b"\\", b"\\..\\", b"//", b"/../", b" ", b"\t", b"\r", b"\n",
                         b"\xc0\xae\xc0\xae", b"\xff", b"\x7f", b"#", b"?", b"%", b"\x1b",
                         "é".encode(), "日本".encode(), "🗺".encode(), b"\xed\xa0\x80",
                         b"\r\n\r\nGET / HTTP/1.1\r\n"]),
        st.binary(max_size=12),
        st.text(max_size=8).map(str.encode),
    ))  # fmt: skip
    target = target[:at] + insert + target[at:]
    if draw(st.integers(0, 4)) == 0:
        target = draw(st.sampled_from(TARGET_PREFIXES)) + target
    method = draw(st.sampled_from([b"GET", b"GET", b"GET", b"HEAD", b"get", b"POST",
                                   b"OPTIONS", b"TRACE", b"G\x00T", b"PROPFIND"]))  # fmt: skip
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0",
                                    b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1\x00", b"http/1.1",
                                    b"HTTP/9.9"]))  # fmt: skip
    headers = draw(st.lists(st.tuples(
        st.sampled_from([b"X-A", b"Host", b"Accept", b"X\x00", b"", b" X", b"X-\xff",
                         b"If-None-Match", b"Range", b"Expect"]),
        st.one_of(st.binary(max_size=20), st.sampled_from([b"100-continue", b"bytes=0-10",
                                                           b"*", b"\xc3\xa9"])),
    ), max_size=2))  # fmt: skip
    request = http_request(target, headers, method, version)
    return Sent(request, base.values, None, head=method == b"HEAD", fresh=True)


HOSTS = [b"127.0.0.1", b"localhost:8080", b"", b"[::1]", b"[::1]:80", b"evil.example",
         b"x" * 300, b"<a>&\"'", b"\xc3\xa9", b"a b", b"host:99999", b"host:-1", b"..", b"/",
         b"a/b?c#d", b"%2e%2e", b"]]>", b"1.2.3.4:5", b"a,b", b"user@host"]  # fmt: skip
CONDITIONS = [b"If-None-Match", b"If-Modified-Since", b"If-Unmodified-Since", b"If-Match",
              b"Range", b"If-Range", b"Accept-Encoding", b"Accept", b"Connection", b"Upgrade",
              b"Cookie", b"Forwarded", b"X-Forwarded-Host", b"X-Forwarded-Proto",
              b"Origin", b"Authorization"]  # fmt: skip
CONDITION_VALUES = [b"*", b'"x"', b'W/"x"', b",,,", b'"' * 1000, b"", b"bytes=0-10",
                    b"bytes=-5", b"bytes=5-", b"bytes=9999999-", b"bytes=" + b"9" * 40 + b"-",
                    b"bytes=0-0,0-0,0-0", b"bytes=5-1", b"bytes=a-b", b"gzip, br, zstd",
                    b"Wed, 21 Oct 2015 07:28:00 GMT", b"Thu, 01 Jan 1970 00:00:00 GMT",
                    b"Sat, 31 Dec 9999 23:59:59 GMT", b"tomorrow", b"close", b"keep-alive",
                    b"upgrade", b"websocket", b"h2c"]  # fmt: skip


def recent_dates() -> st.SearchStrategy[bytes]:
    """HTTP dates around now (a tile's Last-Modified is when it was rendered or planted,
    in this session): now, a few seconds or an hour ago, a minute ahead."""
    offsets = st.sampled_from([0, -1, -5, -3600, 60])
    return offsets.map(lambda offset: formatdate(time.time() + offset, usegmt=True).encode())


@st.composite
def header_requests(draw: st.DrawFn, config: Config, etags: Sequence[bytes]) -> Sent:
    """Valid targets with hostile Host, conditional, Range and other headers."""
    base = draw(st.one_of(
        kvp_requests(config).filter(lambda s: s.expect is not None and s.expect.kind != "error"),
        st.sampled_from([
            Sent(http_request("/wmts/1.0.0/WMTSCapabilities.xml"), (), Expect("capabilities")),
            Sent(http_request("/wmts?service=WMTS&request=GetCapabilities"), (),
                 Expect("capabilities")),
            Sent(http_request("/")), Sent(http_request("/static/demo.css")),
            Sent(http_request("/static/vendor/ol.js")),
        ]),
    ))  # fmt: skip
    target = base.request.split(b" ", 2)[1]
    host = draw(st.sampled_from(HOSTS))
    names = st.sampled_from([*CONDITIONS, *[b"If-None-Match"] * 5,
                             *[b"If-Modified-Since"] * 3])  # fmt: skip
    headers = draw(st.lists(st.tuples(names, st.one_of(
        st.sampled_from(CONDITION_VALUES), st.sampled_from(etags),
        st.lists(st.sampled_from(etags), max_size=3).map(b", ".join),
        recent_dates(),
    )), max_size=4))  # fmt: skip
    if draw(st.integers(0, 2)) == 0:  # a revalidation, last (after any empty line)
        headers.append((b"If-None-Match", draw(st.sampled_from([*etags, b"*", b'"other"']))))
    head = draw(st.booleans())
    request = http_request(target, headers, b"HEAD" if head else b"GET", host=host)
    # A conditional or Range request may be answered 304 / 206 / 412: no expectation then.
    expect = base.expect if not headers else None
    return Sent(request, base.values, expect, head=head, fresh=b"Connection" in dict(headers))


# --- the fuzz tests ----------------------------------------------------------------------------


def _run(site: Site, name: str, strategy: st.SearchStrategy[Sent]) -> Counter[str]:
    site.outcomes.clear()

    @_settings(name)
    @given(sent=strategy)
    def fuzz(sent: Sent) -> None:
        site.check(sent)

    fuzz()
    _still_serving(site)
    print(f"{name}: {dict(site.outcomes.most_common())}")  # shown with -rP, or on failure
    return site.outcomes


def _share(outcomes: Counter[str], prefix: str) -> float:
    return sum(n for k, n in outcomes.items() if k.startswith(prefix)) / sum(outcomes.values())


def test_kvp_requests(site: Site) -> None:
    outcomes = _run(site, "kvp", kvp_requests(site.config))
    # The generator goes deep: many requests succeed, every kind of mistake is met.
    assert _share(outcomes, "tile") > 0.1 and _share(outcomes, "info") > 0.02
    assert _share(outcomes, "capabilities") > 0.02
    codes = {k for k in outcomes if k.startswith("error")}
    # PointIJOutOfRange takes a GetFeatureInfo with one of I/J pushed just out of range:
    # about 1 in 3,000 cases here, so it is required of the REST test, not of this one.
    assert len(codes) >= 5, outcomes
    # Values long enough to pass 8190 bytes come up in some example streams, not in all
    # (the stream follows the config's names): the bound is held by its own test below,
    # test_a_request_line_over_8190_bytes_is_refused, and checked here whenever met.


def test_rest_requests(site: Site) -> None:
    outcomes = _run(site, "rest", rest_requests(site.config))
    assert _share(outcomes, "tile") > 0.1 and _share(outcomes, "info") > 0.05
    codes = ("NotFound", "InvalidParameterValue", "TileOutOfRange", "PointIJOutOfRange",
             "OperationNotSupported")  # fmt: skip
    assert {f"error {code}" for code in codes} <= outcomes.keys()


def test_static_and_other_paths(site: Site) -> None:
    outcomes = _run(site, "paths", st.one_of(static_files(), other_paths()))
    assert outcomes["static 200"] > 100 and outcomes["index 200"] > 0
    assert outcomes["/static 404"] > 100 and outcomes["none 404"] > 100


def test_raw_bytes_in_the_request(site: Site) -> None:
    outcomes = _run(site, "raw", raw_requests(site.config))
    assert outcomes["refused by the parser"] > 100
    assert sum(outcomes.values()) - outcomes["refused by the parser"] > 100


def test_hostile_headers(site: Site) -> None:
    probe = site.connection.exchange(http_request("/wmts/1.0.0/plain/default/merc/0/0/0.png"))
    etags = [probe.headers["etag"].encode(), b"W/" + probe.headers["etag"].encode()]
    outcomes = _run(site, "headers", header_requests(site.config, etags))
    assert outcomes["tile 304"] > 10 and outcomes["tile 200"] > 10
    assert outcomes["capabilities"] > 0


# --- examples worth naming ----------------------------------------------------------------------


def _kvp_tile(**changes: str) -> str:
    params = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": "plain",
              "STYLE": "default", "FORMAT": "image/png", "TILEMATRIXSET": "merc",
              "TILEMATRIX": "17", "TILEROW": "47790", "TILECOL": "68240", **changes}  # fmt: skip
    return "/wmts?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


@pytest.mark.parametrize(
    "row",
    [
        "\u0664\u0667\u0667\u0669\u0660",  # 47790 in Arabic-Indic digits
        "\uff14\uff17\uff17\uff19\uff10",  # in fullwidth digits
        "4779\u0660",
        "47790\n",
        "47790\r",
        "\n47790",
        " 47790",
        "47790 ",
        "47790\x00",
        "+47790\n",
    ],
)
def test_integers_are_ascii_digits_only(site: Site, row: str) -> None:
    """int() takes Unicode digits and surrounding whitespace; WMTS integers do not."""
    for target in (
        _kvp_tile(TILEROW=row),
        f"/wmts/1.0.0/plain/default/merc/17/{quote(row, safe='')}/68240.png",
    ):
        answer = site.check(Sent(http_request(target), (row,), Expect("error")))
        assert answer.status == 400 and b'locator="tilerow"' in answer.body


def test_a_valid_tile_in_every_form(site: Site) -> None:
    for target in (
        _kvp_tile(),
        _kvp_tile(TILEROW="+47790", TILECOL="068240"),
        "/wmts/1.0.0/plain/default/merc/17/47790/68240.png",
        "/wmts/1.0.0/plain/default/merc/%31%37/47790/68240%2Epng",
    ):
        layer = site.config.layers["plain"]
        expect = Expect("tile", layer, TileCoord(17, 47790, 68240))
        assert site.check(Sent(http_request(target), (), expect)).status == 200


@pytest.mark.parametrize(
    "path",
    ["/static/" + "a" * 256, "/static/vendor/" + "é" * 200, "/static/" + "a/" * 2100 + "x"],
    ids=["256-byte name", "400-byte UTF-8 name", "4 kB path"],
)
def test_static_names_too_long_for_the_file_system_are_not_found(site: Site, path: str) -> None:
    """ENAMETOOLONG from aiohttp's static route was a 500."""
    answer = site.check(Sent(http_request(quote(path, safe="/"))))
    assert answer.status == 404


EXPECT_PATHS = ["/", "/wmts/1.0.0/WMTSCapabilities.xml", _kvp_tile(), "/static/demo.css",
                "/wmts/1.0.0/plain/default/merc/17/47790/68240.png"]  # fmt: skip


@pytest.mark.parametrize("path", EXPECT_PATHS)
@pytest.mark.parametrize("expect", [b"\xff", b"\xc3(", b"nonsense", b"100-continue"])
def test_routes_ignore_the_expect_header(site: Site, path: str, expect: bytes) -> None:
    answer = site.check(Sent(http_request(path, [(b"Expect", expect)]), fresh=True))
    assert answer.status == 200


def test_the_upstream_expect_bug_is_told_apart_from_a_server_error(site: Site) -> None:
    """A generated request may meet it (which ones follows the test's source): its logged
    traceback fails no later check."""
    answer = site.check(Sent(http_request("/no-such-path", [(b"Expect", b"\xff")]), fresh=True))
    assert answer.status == 500 and site.outcomes[UPSTREAM_EXPECT_BUG] == 1
    assert site.check(Sent(http_request("/health"))).status == 200


@pytest.mark.xfail(strict=True, reason="aiohttp's default expect handler: 500 (upstream)")
def test_expect_not_utf8_on_a_path_without_route(site: Site) -> None:
    request = http_request("/no-such-path", [(b"Expect", b"\xff")])
    answer = site.connection.exchange(request)
    site.errors.records.clear()  # aiohttp logged its traceback
    assert answer.status == 404


def test_exception_reports_validate_against_the_ows_schema(site: Site) -> None:
    """A few reports, validated apart from the fuzz runs (which validate every report)."""
    for target in ("/wmts", _kvp_tile(TILEROW="x" * 5000), "/wmts/1.0.0/a/b/c/d/e/f.png"):
        validate_exception_report(site.connection.exchange(http_request(target)).body)


# --- size bounds ------------------------------------------------------------------------------


def test_a_request_line_over_8190_bytes_is_refused(site: Site) -> None:
    fits = _kvp_tile(TILEROW="1" * (8000 - len(_kvp_tile(TILEROW=""))))
    answer = site.check(Sent(http_request(fits), (), Expect("error")))
    assert answer.status == 400 and answer.route == "/wmts"
    exactly = "/wmts?x=" + "a" * (8190 - len("/wmts?x="))
    answer = site.check(Sent(http_request(exactly), (), Expect("error")))
    assert answer.status == 400 and answer.route == "/wmts"
    for size in (8191 - len("/wmts?x="), 10_000, 100_000, 1_000_000):
        _refused(site, http_request("/wmts?x=" + "a" * size))


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X-Big", b"a" * 8191)],
        [(b"X-Big", b"a" * 100_000)],
        [(b"X-" + b"n" * 9000, b"1")],
        [(b"Cookie", b"c=" + b"v" * 20_000)],
        [(f"X-H{n}".encode(), b"v") for n in range(128)],  # 129 with Host
        [(b"X-Many", b"v" * 4000) for _ in range(300)],
    ],
    ids=[
        "8191-byte value",
        "100 kB value",
        "9 kB name",
        "20 kB cookie",
        "129 headers",
        "300 x 4 kB",
    ],
)
def test_oversized_headers_are_refused(site: Site, headers: list[tuple[bytes, bytes]]) -> None:
    _refused(site, http_request("/wmts/1.0.0/WMTSCapabilities.xml", headers))


def test_headers_within_the_bounds_are_served(site: Site) -> None:
    # 128 headers with Host, one of 8190 bytes: the limits themselves.
    big = (b"X-Big", b"a" * (8190 - len("X-Big")))
    headers = [big] + [(f"X-H{n}".encode(), b"v") for n in range(126)]
    answer = site.check(Sent(http_request("/wmts/1.0.0/WMTSCapabilities.xml", headers),
                             expect=Expect("capabilities")))  # fmt: skip
    assert answer.status == 200
