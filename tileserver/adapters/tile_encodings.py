"""Which tiles tileserver encodes itself (`pillow_cut`: PNG through `png_encoder`, JPEG
through Pillow), read from a layer's Mapnik encoder name.

Imports no image library: `generate_tiles` over a WMS decides how it cuts before Pillow
and ISA-L are loaded, and loads them in its cutting threads while its first GetMaps are
in flight (`threaded_cut`; benchmarks/RESULTS.md, issue 15, phase 7).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PNG = re.compile(r"png(?:32)?(?::z=(-1|\d))?")  # zlib level; Mapnik's default -1 is 6
_JPEG = re.compile(r"jpe?g(\d{1,3})?")  # quality; Mapnik's default is 85


@dataclass(frozen=True, slots=True)
class Encoding:
    format: str  # Pillow's: PNG or JPEG
    level: int  # PNG zlib level or JPEG quality


def options(image_format: str) -> Encoding | None:
    """Pillow's encoding for a Mapnik encoder name; None where Mapnik must encode."""
    png = _PNG.fullmatch(image_format)
    if png is not None:
        level = int(png.group(1) or -1)
        return Encoding("PNG", 6 if level < 0 else level)
    jpeg = _JPEG.fullmatch(image_format)
    if jpeg is not None:
        quality = int(jpeg.group(1) or 85)
        return Encoding("JPEG", quality) if 1 <= quality <= 100 else None
    return None
