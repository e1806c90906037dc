"""The comparison of two runs' tiles (tests/support/images.py) tells tiles apart."""

from __future__ import annotations

import io
import zlib

from PIL import Image

from tests.support.images import differing, same_tile
from tileserver.adapters import png_encoder


def pixels(size: int = 16) -> bytes:
    return bytes(
        (x * 7 + y * 3 + c) % 256 for y in range(size) for x in range(size) for c in range(4)
    )


def test_the_same_pixels_deflated_otherwise_are_the_same_tile() -> None:
    fast = png_encoder.encode(pixels(), 16, 16, "RGBA", 1)
    small = png_encoder.encode(pixels(), 16, 16, "RGBA", 9)
    assert fast != small
    assert zlib.decompress(fast[41:-16]) == zlib.decompress(small[41:-16])  # rows, not bytes
    assert same_tile(fast, small) and same_tile(small, fast)
    assert differing({"a": fast}, {"a": small}) == []


def test_a_pixel_a_mode_a_size_or_a_cut_file_tells_tiles_apart() -> None:
    tile = png_encoder.encode(pixels(), 16, 16, "RGBA", 1)
    changed = bytearray(pixels())
    changed[-1] ^= 1  # the last pixel's alpha
    assert not same_tile(png_encoder.encode(bytes(changed), 16, 16, "RGBA", 1), tile)
    opaque = bytes(b for i, b in enumerate(pixels()) if i % 4 != 3)
    rgb = png_encoder.encode(opaque, 16, 16, "RGB", 1)
    rgba = png_encoder.encode(pixels(), 16, 16, "RGBA", 1)
    assert not same_tile(rgb, rgba)
    assert not same_tile(png_encoder.encode(pixels(8), 8, 8, "RGBA", 1), tile)
    assert not same_tile(tile[: len(tile) // 2], tile)  # cut short: not an image
    assert not same_tile(b"not a tile", b"not a tile either")
    out = io.BytesIO()
    Image.frombytes("RGBA", (16, 16), pixels()).save(out, "WEBP", lossless=True)
    assert not same_tile(out.getvalue(), tile)  # the same pixels in another format


def test_missing_extra_and_changed_keys_are_listed() -> None:
    tile = png_encoder.encode(pixels(), 16, 16, "RGBA", 1)
    other = png_encoder.encode(pixels(8), 8, 8, "RGBA", 1)
    found = {"same": tile, "changed": other, "extra": tile}
    expected = {"same": tile, "changed": tile, "missing": tile}
    assert sorted(differing(found, expected)) == ["changed", "extra", "missing"]
