"""Code that runs inside the render processes: load Mapnik maps once, render and cut.

The `mapnik` wheel is not safe with two threads rendering at once, so each render
process holds its own maps and renders one metatile at a time. Cutting and encoding
happen here too, so the server's event loop never touches pixels. `mapnik` is imported
by the worker processes only, so the server processes do not carry it.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

mapnik: Any = None  # the module, imported by `init_worker`
_MAPS: dict[str, Any] = {}
_LOAD_ERRORS: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class MapSpec:
    layer: str
    mapfile: str
    srs: str  # the grid's CRS; the style's layers are reprojected to it


@dataclass(frozen=True, slots=True)
class RenderJob:
    layer: str
    bbox: tuple[float, float, float, float]
    width: int
    height: int
    tile_size: int
    tiles: tuple[tuple[int, int, int, int, int], ...]  # z, row, col, x, y
    image_format: str  # Mapnik encoder, e.g. 'png', 'png32', 'jpeg85'
    variables: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RenderResult:
    tiles: dict[tuple[int, int, int], bytes]
    render_seconds: float
    encode_seconds: float


def _import_mapnik() -> None:
    global mapnik
    if mapnik is None:
        import mapnik as module

        mapnik = module


def load_map(spec: MapSpec) -> Any:
    """A Mapnik map of spec's style, projected to spec's CRS."""
    _import_mapnik()
    m = mapnik.Map(256, 256)
    mapnik.load_map(m, spec.mapfile)
    m.srs = spec.srs.lower()
    return m


def init_worker(specs: tuple[MapSpec, ...]) -> None:
    """Pool initializer: the parent handles Ctrl-C; load every map once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for spec in specs:
        try:
            _MAPS[spec.layer] = load_map(spec)
        except Exception as exc:
            _LOAD_ERRORS[spec.layer] = f"{type(exc).__name__}: {exc}"


def load_errors() -> dict[str, str]:
    return dict(_LOAD_ERRORS)


def render_metatile(job: RenderJob) -> RenderResult:
    m = _MAPS.get(job.layer)
    if m is None:
        raise RuntimeError(_LOAD_ERRORS.get(job.layer, f"no map loaded for layer {job.layer!r}"))
    start = time.perf_counter()
    m.resize(job.width, job.height)
    m.zoom_to_box(mapnik.Box2d(*job.bbox))
    image = mapnik.Image(job.width, job.height)
    if job.variables:
        mapnik.render_with_vars(m, image, dict(job.variables))
    else:
        mapnik.render(m, image)
    rendered = time.perf_counter()
    size = job.tile_size
    tiles = {
        (z, row, col): image.view(x, y, size, size).to_string(job.image_format)
        for z, row, col, x, y in job.tiles
    }
    return RenderResult(tiles, rendered - start, time.perf_counter() - rendered)
