"""Reading the rows of unfiltered PNGs (MapServer's GetMap answers) without Pillow:
exactly Pillow's pixels, and every other PNG left to Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tests.support.mapserver import MapServerWMS
from tileserver.adapters import png_decoder, png_encoder
from tileserver.adapters.png_decoder import NotPlain


def picture(width: int = 300, height: int = 200, mode: str = "RGB") -> Image.Image:
    """Flat areas, a gradient every few rows and a line: rows that differ from each other;
    in RGBA, transparent and half-transparent pixels."""
    image = Image.new(mode, (width, height), (242, 239, 233, 255)[: len(mode)])
    for y in range(0, height, 5):
        for x in range(width):
            image.putpixel((x, y), (x % 256, (3 * y) % 256, (x * y) % 256, x % 256)[: len(mode)])
    for i in range(min(width, height)):
        image.putpixel((i, i), (200, 30, 30, 255)[: len(mode)])
    return image


def unfiltered(image: Image.Image) -> bytes:
    """The image as MapServer writes it: every row with filter type 0."""
    return png_encoder.encode(image.tobytes(), image.width, image.height, image.mode, 6)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, offset = [], len(png_decoder.SIGNATURE)
    while offset < len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        out.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return out


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in parts
    )
    return png_decoder.SIGNATURE + body


def split_idat(data: bytes, size: int) -> bytes:
    """The same PNG with its image data in IDAT chunks of `size` bytes."""
    parts = chunks(data)
    stream = b"".join(body for kind, body in parts if kind == b"IDAT")
    idats = [(b"IDAT", stream[i : i + size]) for i in range(0, len(stream), size)]
    return assemble([parts[0], *idats, (b"IEND", b"")])


def with_stream(data: bytes, stream: bytes) -> bytes:
    """The same PNG with `stream` as its image data (right CRCs)."""
    parts = chunks(data)
    return assemble([parts[0], (b"IDAT", stream), (b"IEND", b"")])


def with_header(data: bytes, **fields: int) -> bytes:
    parts = chunks(data)
    names = ("width", "height", "depth", "colour_type", "compression", "filter", "interlace")
    values = dict(zip(names, struct.unpack(">IIBBBBB", parts[0][1]), strict=True)) | fields
    return assemble([(b"IHDR", struct.pack(">IIBBBBB", *values.values())), *parts[1:]])


def rows_of(png: png_decoder.PlainPng) -> bytes:
    """The pixels of every band, their filter bytes left out."""
    stride = png.stride
    out = []
    expected = 0
    for first, band in png.bands():
        assert first == expected
        count = len(band) // stride
        expected += count
        out += [band[i * stride + 1 : (i + 1) * stride] for i in range(count)]
    assert expected == png.height
    return b"".join(out)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("idat_size", [None, 1, 100, 8192])
@pytest.mark.parametrize(("width", "height"), [(300, 200), (2112, 40), (1, 1)])
def test_the_rows_are_the_pixels_pillow_decodes(
    width: int, height: int, idat_size: int | None, mode: str
) -> None:
    image = picture(width, height, mode)
    data = unfiltered(image)
    if idat_size is not None:
        data = split_idat(data, idat_size)
    png = png_decoder.read(data)
    assert png is not None
    assert (png.width, png.height, png.mode) == (width, height, mode)
    assert png.stride == 1 + len(mode) * width
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == mode
    assert rows_of(png) == decoded.tobytes() == image.tobytes()


def test_a_mapserver_getmap_answer_is_read_as_it_is(mapserver: MapServerWMS) -> None:
    """MapServer's answers are what this reader is for: not left to Pillow."""
    bbox = (823000.0, 5420000.0, 829000.0, 5426000.0)
    data = mapserver.direct_getmap(bbox, 1056, 528)
    png = png_decoder.read(data)
    assert png is not None
    decoded = Image.open(io.BytesIO(data))
    assert png.mode == decoded.mode
    pixels = rows_of(png)
    assert pixels == decoded.tobytes()
    step = len(png.mode)
    assert len({pixels[i : i + step] for i in range(0, len(pixels), step * 97)}) > 10  # a map


def other(mode: str, **options: object) -> bytes:
    out = io.BytesIO()
    picture().convert(mode).save(out, "PNG", **options)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(other("P"), id="palette"),
        pytest.param(other("L"), id="grey"),
        pytest.param(other("RGB", transparency=(242, 239, 233)), id="tRNS"),
        pytest.param(with_header(unfiltered(picture()), interlace=1), id="interlaced"),
        pytest.param(with_header(unfiltered(picture()), depth=16), id="16-bit"),
        pytest.param(unfiltered(picture())[:-12], id="no IEND"),
        pytest.param(unfiltered(picture())[:500], id="truncated chunk"),
        pytest.param(
            unfiltered(picture())[:60]
            + bytes([unfiltered(picture())[60] ^ 1])
            + unfiltered(picture())[61:],
            id="wrong CRC",
        ),
        pytest.param(b"<html>Service unavailable</html>", id="not a PNG"),
        pytest.param(with_stream(unfiltered(picture()), b""), id="no image data"),
    ],
)
def test_other_pngs_are_left_to_pillow(data: bytes) -> None:
    assert png_decoder.read(data) is None


def test_a_filtered_row_is_refused() -> None:
    """Pillow's own PNGs filter their rows: plain RGB, but not readable as they are."""
    data = other("RGB")
    png = png_decoder.read(data)
    assert png is not None
    with pytest.raises(NotPlain, match="a row filter"):
        rows_of(png)


def stream(image: Image.Image, extra_rows: int = 0, cut: int = 0) -> bytes:
    rows = image.tobytes() + bytes(3 * image.width * extra_rows)
    stride = 3 * image.width
    filtered = b"".join(b"\x00" + rows[i : i + stride] for i in range(0, len(rows), stride))
    compressed = zlib.compress(filtered)
    return compressed[: len(compressed) - cut] if cut else compressed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_stream(unfiltered(picture()), stream(picture(), cut=4)), "ends early"),
        (with_stream(unfiltered(picture()), stream(picture(), cut=2000)), "ends in row"),
        (with_stream(unfiltered(picture()), stream(picture(), extra_rows=1)), "more image data"),
        (with_stream(unfiltered(picture()), b"\x78\x9c" + bytes(100)), "broken|ends in row"),
    ],
)
def test_a_stream_that_is_not_the_announced_rows_is_refused(data: bytes, message: str) -> None:
    png = png_decoder.read(data)
    assert png is not None
    with pytest.raises(NotPlain, match=message):
        rows_of(png)
