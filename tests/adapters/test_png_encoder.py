"""The PNG writer of the render processes: exactly the pixels given, valid PNG files."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from tileserver.adapters import png_encoder


def tile(mode: str, width: int = 256, height: int = 256) -> Image.Image:
    """Flat areas, a gradient and, in RGBA, transparent and half-transparent pixels."""
    image = Image.new(mode, (width, height), (242, 239, 233, 255)[: len(mode)])
    for x in range(width):
        for y in range(0, height, 7):
            image.putpixel((x, y), (x % 256, (255 - y) % 256, 90, (x * 3) % 256)[: len(mode)])
    return image


def decode(data: bytes) -> PngImagePlugin.PngImageFile:
    image = Image.open(io.BytesIO(data))
    assert isinstance(image, PngImagePlugin.PngImageFile)
    return image


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("level", [-1, 0, 1, 2, 3, 4, 6, 9])
def test_the_decoded_pixels_mode_and_size_are_those_given(mode: str, level: int) -> None:
    source = tile(mode)
    data = png_encoder.encode(source.tobytes(), 256, 256, mode, level)
    assert data.startswith(png_encoder.SIGNATURE)
    decode(data).verify()  # the chunks' CRCs and the IEND
    image = decode(data)
    assert (image.mode, image.size) == (mode, (256, 256))
    assert image.tobytes() == source.tobytes()


def test_higher_levels_are_smaller_and_level_0_is_stored() -> None:
    pixels = tile("RGBA").tobytes()
    sizes = {level: len(png_encoder.encode(pixels, 256, 256, "RGBA", level)) for level in (0, 1, 9)}
    assert sizes[0] > len(pixels)  # stored: the rows and their filter bytes, uncompressed
    assert sizes[9] < sizes[1] < sizes[0]


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(["RGB", "RGBA"]),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    level=st.integers(-1, 9),
    data=st.data(),
)
def test_any_pixels_round_trip(
    mode: str, width: int, height: int, level: int, data: st.DataObject
) -> None:
    size = width * height * len(mode)
    pixels = data.draw(st.binary(min_size=size, max_size=size))
    image = decode(png_encoder.encode(pixels, width, height, mode, level))
    assert (image.mode, image.size) == (mode, (width, height))
    assert image.tobytes() == pixels


def test_pixels_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match="1000 bytes for 16x16 RGBA pixels"):
        png_encoder.encode(b"\0" * 1000, 16, 16, "RGBA", 1)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_the_fast_levels_are_isa_ls_deflate(level: int) -> None:
    import struct
    import zlib

    from isal import isal_zlib

    source = tile("RGB")
    data = png_encoder.encode(source.tobytes(), 256, 256, "RGB", level)
    length = struct.unpack(">I", data[33:37])[0]  # the IDAT after the signature and IHDR
    assert data[37:41] == b"IDAT"
    idat = data[41 : 41 + length]
    rows = b"".join(b"\x00" + source.tobytes()[i : i + 768] for i in range(0, 256 * 768, 768))
    assert idat == isal_zlib.compress(rows, level)
    assert zlib.decompress(idat) == rows  # a zlib stream, as PNG requires


def test_rows_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match=r"rows of \[6, 9\] bytes"):
        png_encoder.encode_rows([b"\0" * 6, b"\0" * 9], "RGB", 1)
    with pytest.raises(ValueError, match=r"rows of \[5\] bytes for RGB"):
        png_encoder.encode_rows([b"\0" * 5], "RGB", 1)
