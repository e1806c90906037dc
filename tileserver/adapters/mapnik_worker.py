"""Code that runs inside the render processes: load Mapnik maps once, render and cut.

The `mapnik` wheel is not safe with two threads rendering at once, so each render
process holds its own maps and renders one metatile at a time. Cutting and encoding
happen here too, so the server's event loop never touches pixels. `mapnik` is imported
by the worker processes only, so the server processes do not carry it.
"""

from __future__ import annotations

import os
import signal
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from tileserver.adapters import image_feed, pillow_cut
from tileserver.adapters.parent_death import die_with_parent
from tileserver.adapters.process_memory import return_large_buffers

mapnik: Any = None  # the module, imported by `init_worker`
# Where a job's first tile goes as soon as it is encoded (`Job.early`): a channel to the
# server process (early_tiles.EarlySender), which answers the request that caused the
# render from it while the other tiles are still being encoded here (answer first).
_EARLY: Any = None
_MAPS: dict[str, Any] = {}
_SPECS: dict[str, MapSpec] = {}
_LOAD_ERRORS: dict[str, str] = {}  # style mistakes: the server refuses to start
_UNAVAILABLE: dict[str, str] = {}  # a database down: loaded again at the next render

# The datasource parameters a layer's `connection` replaces (Mapnik's postgis plugin).
POSTGIS_PARAMETERS = ("host", "port", "dbname", "user", "password", "connect_timeout")


@dataclass(frozen=True, slots=True)
class MapSpec:
    layer: str
    mapfile: str
    srs: str  # the grid's CRS; the style's layers are reprojected to it
    # Replaces these parameters of every PostGIS datasource of the style (name, value).
    postgis: tuple[tuple[str, str], ...] = ()
    # Pixels of data read around the rendered area (the layer's `data_buffer`, Mapnik's
    # buffer-size); None keeps the style's.
    buffer_size: int | None = None


class DatabaseUnavailable(RuntimeError):
    """A style's database could not be reached; the map is loaded again later."""


@dataclass(frozen=True, slots=True)
class RenderJob:
    layer: str
    bbox: tuple[float, float, float, float]
    width: int
    height: int
    tile_size: int
    tiles: tuple[pillow_cut.Cut, ...]  # z, row, col, x, y
    image_format: str  # Mapnik encoder, e.g. 'png', 'png32', 'jpeg85'
    variables: tuple[tuple[str, str], ...] = ()
    srs: str = ""  # the CRS of the metatile's grid ("": the map's, its layer's first grid)
    # The first tile of `tiles` is sent on the early channel under this number once encoded
    # (0: none is; the tiles come back together).
    early: int = 0


@dataclass(frozen=True, slots=True)
class RenderResult:
    tiles: dict[tuple[int, int, int], bytes]
    render_seconds: float
    encode_seconds: float
    # The tiles all of one colour: that colour (RGBA, straight alpha), seen in the pixels.
    uniform: pillow_cut.Uniform = field(default_factory=dict)


def _import_mapnik() -> None:
    global mapnik
    if mapnik is None:
        import mapnik as module

        mapnik = module


def with_postgis(xml: str, parameters: tuple[tuple[str, str], ...]) -> str:
    """The style with `parameters` set in each of its PostGIS datasources."""
    root = ET.fromstring(xml)
    for datasource in root.iter("Datasource"):
        params = {p.get("name"): p for p in datasource.findall("Parameter")}
        kind = params.get("type")
        if kind is None or (kind.text or "").strip() != "postgis":
            continue
        for name, value in parameters:
            element = params.get(name)
            if element is None:
                element = ET.SubElement(datasource, "Parameter", name=name)
            element.text = value
    return ET.tostring(root, encoding="unicode")


def is_database_error(message: str) -> bool:
    """True when Mapnik failed to reach a database (as opposed to a mistake in a style)."""
    lowered = message.lower()
    return "postgis" in lowered and (
        "connect" in lowered
        or "server closed the connection" in lowered
        or "terminating connection" in lowered
        or "no connection to the server" in lowered
        or "the database system is" in lowered
    )


def load_map(spec: MapSpec) -> Any:
    """A Mapnik map of spec's style, projected to spec's CRS."""
    _import_mapnik()
    m = mapnik.Map(256, 256)
    try:
        if spec.postgis:
            with open(spec.mapfile, encoding="utf-8") as f:
                xml = with_postgis(f.read(), spec.postgis)
            base = os.path.dirname(os.path.abspath(spec.mapfile))
            mapnik.load_map_from_string(m, xml, False, base)
        else:
            mapnik.load_map(m, spec.mapfile)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        if is_database_error(message):
            raise DatabaseUnavailable(message) from exc
        raise
    m.srs = spec.srs.lower()
    if spec.buffer_size is not None:
        m.buffer_size = spec.buffer_size
    return m


def init_worker(
    specs: tuple[MapSpec, ...], parent_pid: int | None = None, early: Any = None
) -> None:
    """Pool initializer: dies with the parent (`parent_pid`), which handles Ctrl-C; loads
    every map once. `early`: the channel of first tiles (see `_EARLY`)."""
    global _EARLY
    _EARLY = early
    if parent_pid is not None:
        die_with_parent(parent_pid)
    return_large_buffers()  # a metatile's buffers do not stay resident after its render
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for spec in specs:
        _SPECS[spec.layer] = spec
        try:
            _MAPS[spec.layer] = load_map(spec)
        except DatabaseUnavailable as exc:
            _UNAVAILABLE[spec.layer] = str(exc)
        except Exception as exc:
            _LOAD_ERRORS[spec.layer] = f"{type(exc).__name__}: {exc}"


def load_errors() -> dict[str, str]:
    return dict(_LOAD_ERRORS)


def ping() -> dict[str, str]:
    """A render process answers: the layers whose database it could not reach, and why."""
    return dict(_UNAVAILABLE)


def _map_of(layer: str) -> Any:
    m = _MAPS.get(layer)
    if m is not None:
        return m
    spec = _SPECS.get(layer)
    if spec is None or layer in _LOAD_ERRORS:
        raise RuntimeError(_LOAD_ERRORS.get(layer, f"no map loaded for layer {layer!r}"))
    m = load_map(spec)  # DatabaseUnavailable while the database is still down
    _UNAVAILABLE.pop(layer, None)
    _MAPS[layer] = m
    return m


def render_metatile(job: RenderJob) -> RenderResult:
    m = _map_of(job.layer)
    start = time.perf_counter()
    if job.srs and m.srs != job.srs.lower():  # a layer on several grids (TCC's `grids`)
        m.srs = job.srs.lower()
    m.resize(job.width, job.height)
    m.zoom_to_box(mapnik.Box2d(*job.bbox))
    image = mapnik.Image(job.width, job.height)
    try:
        if job.variables:
            mapnik.render_with_vars(m, image, dict(job.variables))
        else:
            mapnik.render(m, image)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        if is_database_error(message):
            # Load the map again at the next render: its datasources may hold dead
            # connections once the database comes back.
            _MAPS.pop(job.layer, None)
            _UNAVAILABLE[job.layer] = message
            raise DatabaseUnavailable(message) from exc
        raise
    rendered = time.perf_counter()
    uniform: pillow_cut.Uniform = {}
    encoding = pillow_cut.options(job.image_format)
    if encoding is not None and encoding.format == "PNG":
        # A plain PNG: the raw pixels cut and encoded by pillow_cut (no row filter, ISA-L's
        # deflate), several times faster than Mapnik's encoder for the same pixels.
        if image.premultiplied():
            image.demultiply()  # what Mapnik's own PNG encoder does to a copy
        tiles = pillow_cut.cut_pixels(
            image.to_string(), job.width, job.height, job.tiles, job.tile_size, encoding,
            uniform, _first_done(job.early),
        )  # fmt: skip
    else:
        tiles = _cut(
            image, job.tiles, job.tile_size, job.image_format, uniform, _first_done(job.early)
        )
    return RenderResult(tiles, rendered - start, time.perf_counter() - rendered, uniform)


def _first_done(early: int) -> pillow_cut.FirstDone | None:
    """What sends a job's first tile to the server process, None when it is not wanted."""
    sender = _EARLY
    if not early or sender is None:
        return None
    return lambda data: sender.send(early, data)


# Encoded single-colour tiles by (pixel type, colour, size, format): sea, land and empty
# tiles, often a third of a metatile, are encoded once per render process (as MapCache
# does with its blank tiles).
_SOLID: dict[tuple[object, int, int, str], bytes] = {}
_SOLID_MAX = 4096


def _cut(
    image: Any,
    cuts: tuple[pillow_cut.Cut, ...],
    size: int,
    image_format: str,
    uniform: pillow_cut.Uniform | None = None,
    first_done: pillow_cut.FirstDone | None = None,
) -> dict[tuple[int, int, int], bytes]:
    """Each (z, row, col, x, y) of cuts: the size x size view at (x, y), encoded; the
    colour of those all of one colour goes in `uniform`."""
    tiles = {}
    for z, row, col, x, y in cuts:
        view = image.view(x, y, size, size)
        if view.is_solid():
            if uniform is not None:
                uniform[(z, row, col)] = rgba(image.get_pixel(x, y), image.premultiplied())
            key = (image.get_type(), image.get_pixel(x, y), size, image_format)
            data = _SOLID.get(key)
            if data is None:
                data = view.to_string(image_format)
                if len(_SOLID) >= _SOLID_MAX:
                    _SOLID.clear()
                _SOLID[key] = data
        else:
            data = view.to_string(image_format)
        tiles[(z, row, col)] = data
        if first_done is not None:
            first_done(data)
            first_done = None
    return tiles


def rgba(pixel: int, premultiplied: bool) -> tuple[int, int, int, int]:
    """A Mapnik rgba8 pixel (0xAABBGGRR) as straight-alpha RGBA."""
    red, green, blue, alpha = (pixel >> shift & 0xFF for shift in (0, 8, 16, 24))
    if premultiplied and 0 < alpha < 255:
        red, green, blue = (min(255, round(v * 255 / alpha)) for v in (red, green, blue))
    return (red, green, blue, alpha)


@dataclass(frozen=True, slots=True)
class CutJob:
    """An image rendered elsewhere (a WMS GetMap answer) to cut into encoded tiles."""

    image: bytes  # b"" when it comes through `feed`
    width: int  # expected size, buffer included
    height: int
    tile_size: int
    tiles: tuple[pillow_cut.Cut, ...]  # z, row, col, x, y
    image_format: str
    early: int = 0  # as RenderJob's
    feed: str = ""  # where the image is read from as it arrives (image_feed), else ""


class InvalidImage(ValueError):
    """The bytes are not an image of the expected size."""


def cut_image(job: CutJob) -> RenderResult:
    start = time.perf_counter()
    encoding = pillow_cut.options(job.image_format)
    uniform: pillow_cut.Uniform = {}
    first_done = _first_done(job.early)
    image = job.image
    try:
        if job.feed:
            pieces = image_feed.FeedReader(job.feed)
            try:
                if encoding is not None:
                    tiles = pillow_cut.cut_pieces(
                        pieces, job.width, job.height, job.tiles, job.tile_size, encoding,
                        uniform, first_done,
                    )  # fmt: skip
                    return RenderResult(tiles, 0.0, time.perf_counter() - start, uniform)
                image = b"".join(pieces.rest())
            finally:
                pieces.close()
        if encoding is not None:  # a plain PNG or JPEG: Pillow's reader is the faster
            tiles = pillow_cut.cut(
                image, job.width, job.height, job.tiles, job.tile_size, encoding,
                uniform, first_done,
            )  # fmt: skip
            return RenderResult(tiles, 0.0, time.perf_counter() - start, uniform)
    except (pillow_cut.NotAnImage, image_feed.FeedBroken) as exc:
        raise InvalidImage(str(exc)) from exc
    _import_mapnik()
    try:
        decoded_image = mapnik.Image.from_string(image)
    except Exception as exc:
        raise InvalidImage(f"not a readable image ({exc})") from exc
    if (decoded_image.width(), decoded_image.height()) != (job.width, job.height):
        raise InvalidImage(
            f"an image of {decoded_image.width()}x{decoded_image.height()} pixels instead of "
            f"{job.width}x{job.height}"
        )
    decoded = time.perf_counter()
    tiles = _cut(decoded_image, job.tiles, job.tile_size, job.image_format, uniform, first_done)
    return RenderResult(tiles, decoded - start, time.perf_counter() - decoded, uniform)
