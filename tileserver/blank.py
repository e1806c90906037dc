"""Blank tiles: answered for a pre-generated tile absent from the store (`missing_tile`)."""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image


@lru_cache(maxsize=16)
def transparent_tile(mime_type: str, size: int) -> bytes:
    """A fully transparent PNG; JPEG has no alpha, so a white one."""
    out = io.BytesIO()
    if mime_type == "image/jpeg":
        Image.new("RGB", (size, size), (255, 255, 255)).save(out, "JPEG", quality=85)
    else:
        Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(out, "PNG", optimize=True)
    return out.getvalue()
