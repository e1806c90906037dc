"""The tiles of two generation runs compared as images.

Two runs of one generation draw the same pixels, but their PNG files are not always the
same bytes: ISA-L's deflate (`png_encoder`) was seen to take another, equally valid match
for the same rows of one tile in a few hundred (once in about two full test runs, with the
machine loaded). A tile is therefore the same when its bytes are, or else when both files
decode to the same format, mode, size and pixels. A file cut short or not an image is
never the same as a whole one.

Also the tiles tests plant in a store: PNGs of one colour each, told apart by it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Hashable, Mapping
from typing import TypeVar

from PIL import Image

from tileserver.protocols import TileStore

K = TypeVar("K", bound=Hashable)


def same_tile(found: bytes, expected: bytes) -> bool:
    """Whether `found` is the tile `expected`: the same bytes, or the same image."""
    if found == expected:
        return True
    seen, wanted = _image(found), _image(expected)
    return seen is not None and seen == wanted


def differing(found: Mapping[K, bytes], expected: Mapping[K, bytes]) -> list[K]:
    """The keys present in only one of the two, and those whose tiles are not the same
    (`same_tile`); empty when the runs wrote the same tiles."""
    missing = [key for key in expected if key not in found]
    extra = [key for key in found if key not in expected]
    changed = [
        key for key, data in found.items() if key in expected and not same_tile(data, expected[key])
    ]
    return missing + extra + changed


def _image(data: bytes) -> tuple[str | None, str, tuple[int, int], bytes] | None:
    """Format, mode, size and pixels of an image file; None when it is not a whole one."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.format, image.mode, image.size, image.tobytes()
    except (OSError, SyntaxError, ValueError):
        return None


def planted_png(colour: tuple[int, int, int]) -> bytes:
    """A 256 px PNG of one colour."""
    out = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(out, "PNG")
    return out.getvalue()


def plant(store: TileStore, items: Mapping[str, bytes]) -> None:
    """Puts PNG tiles (by their path in the store) into the store, opened for it."""

    async def put() -> None:
        await store.open()
        try:
            await store.put_many(items, "image/png")
        finally:
            await store.close()

    asyncio.run(put())
