"""Cutting WMS answers with Pillow: the same pixels as Mapnik's cut, and clear refusals."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tileserver.adapters import mapnik_worker, pillow_cut, plain_cut, png_decoder, png_encoder
from tileserver.adapters.pillow_cut import Encoding, NotAnImage

CUTS = ((5, 0, 0, 0, 0), (5, 0, 1, 256, 0))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("png", Encoding("PNG", 6)),
        ("png32", Encoding("PNG", 6)),
        ("png:z=1", Encoding("PNG", 1)),
        ("png32:z=9", Encoding("PNG", 9)),
        ("png:z=-1", Encoding("PNG", 6)),
        ("jpeg", Encoding("JPEG", 85)),
        ("jpeg70", Encoding("JPEG", 70)),
        ("jpg100", Encoding("JPEG", 100)),
        ("png8", None),
        ("png8:m=h", None),
        ("png:t=0", None),
        ("png:z=1:s=rle", None),
        ("jpeg0", None),
        ("jpeg101", None),
        ("webp", None),
    ],
)
def test_only_plain_png_and_jpeg_names_are_cut_with_pillow(
    name: str, expected: Encoding | None
) -> None:
    assert pillow_cut.options(name) == expected


def source(mode: str = "RGB") -> bytes:
    """A 512x256 image: the left half one colour, the right half with a red dot."""
    image = Image.new(mode, (512, 256), (10, 120, 200, 255)[: len(mode)])
    image.putpixel((300, 7), (255, 0, 0, 255)[: len(mode)])
    if mode == "RGBA":
        image.putpixel((400, 9), (0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_tiles_have_the_pixels_mapnik_cuts(mode: str) -> None:
    import mapnik

    data = source(mode)
    ours = pillow_cut.cut(data, 512, 256, CUTS, 256, Encoding("PNG", 1))
    theirs = mapnik_worker._cut(mapnik.Image.from_string(data), CUTS, 256, "png:z=1")
    assert ours.keys() == theirs.keys()
    for key in ours:
        a, b = decoded(ours[key]), decoded(theirs[key])
        assert a.size == b.size == (256, 256)
        assert a.convert("RGBA").tobytes() == b.convert("RGBA").tobytes()
    # An opaque image gives RGB tiles; transparency is kept where there is some.
    assert decoded(ours[(5, 0, 1)]).mode == ("RGB" if mode == "RGB" else "RGBA")
    assert decoded(ours[(5, 0, 1)]).getpixel((300 - 256, 7))[:3] == (255, 0, 0)


def test_a_solid_tile_is_encoded_once_and_jpeg_is_cut_too() -> None:
    first = pillow_cut.cut(source(), 512, 256, CUTS, 256, Encoding("PNG", 1))
    second = pillow_cut.cut(source(), 512, 256, CUTS, 256, Encoding("PNG", 1))
    assert first[(5, 0, 0)] is second[(5, 0, 0)]
    assert first[(5, 0, 1)] is not second[(5, 0, 1)]
    jpeg = pillow_cut.cut(source("RGBA"), 512, 256, CUTS, 256, Encoding("JPEG", 90))
    tile = decoded(jpeg[(5, 0, 0)])
    assert (tile.format, tile.mode, tile.size) == ("JPEG", "RGB", (256, 256))
    pixel = tile.getpixel((5, 5))
    assert isinstance(pixel, tuple)
    assert all(abs(a - b) <= 2 for a, b in zip(pixel, (10, 120, 200), strict=True))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (source()[:500], "not a readable image"),
        (b"<html>Service unavailable</html>", "not a readable image"),
        (source(), "an image of 512x256 pixels instead of 256x256"),
    ],
)
def test_broken_or_wrong_sized_answers_are_refused(data: bytes, message: str) -> None:
    width = 256 if "instead" in message else 512
    with pytest.raises(NotAnImage, match=message):
        pillow_cut.cut(data, width, 256, CUTS[:1], 256, Encoding("PNG", 1))
    # and through the render process's entry point, as InvalidImage
    job = mapnik_worker.CutJob(data, width, 256, 256, CUTS[:1], "png:z=1")
    with pytest.raises(mapnik_worker.InvalidImage, match=message):
        mapnik_worker.cut_image(job)


def test_png_tiles_are_unfiltered_pngs_with_the_requested_level() -> None:
    from PIL import PngImagePlugin

    image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    for x in range(0, 256, 3):
        image.putpixel((x, x), (x, 255 - x, 7, 128))
    out = io.BytesIO()
    image.save(out, "PNG")
    fast = pillow_cut.cut(out.getvalue(), 256, 256, CUTS[:1], 256, Encoding("PNG", 1))
    best = pillow_cut.cut(out.getvalue(), 256, 256, CUTS[:1], 256, Encoding("PNG", 9))
    for data in (fast[(5, 0, 0)], best[(5, 0, 0)]):
        tile = decoded(data)
        assert isinstance(tile, PngImagePlugin.PngImageFile)
        assert (tile.mode, tile.size) == ("RGBA", (256, 256))
        assert tile.tobytes() == image.tobytes()
        decoded(data).verify()  # chunk CRCs
    assert len(best[(5, 0, 0)]) < len(fast[(5, 0, 0)])


def stripes(vertical: bool) -> bytes:
    """A 256x256 PNG of two colours: the same row repeated (vertical stripes), or rows of
    one colour that differ from each other (horizontal stripes)."""
    image = Image.new("RGB", (256, 256), (200, 10, 10))
    for i in range(0, 256, 2):
        for j in range(256):
            image.putpixel((i, j) if vertical else (j, i), (10, 10, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("vertical", [True, False])
def test_tiles_of_repeated_rows_or_of_one_coloured_rows_are_not_taken_for_solid(
    vertical: bool,
) -> None:
    data = stripes(vertical)
    tile = pillow_cut.cut(data, 256, 256, CUTS[:1], 256, Encoding("PNG", 1))[(5, 0, 0)]
    assert decoded(tile).convert("RGB").tobytes() == decoded(data).convert("RGB").tobytes()
    assert sorted(c for _, c in decoded(tile).convert("RGB").getcolors() or []) == [
        (10, 10, 200),
        (200, 10, 10),
    ]


def test_a_cut_outside_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the 512x256 image"):
        pillow_cut.cut(source(), 512, 256, ((5, 0, 2, 384, 0),), 256, Encoding("PNG", 1))


@pytest.mark.parametrize("image_format", ["png:z=1", "jpeg85", "png8"])
def test_the_render_says_which_tiles_are_all_one_colour(image_format: str) -> None:
    """Whatever the encoder (tileserver's for png and jpeg, Mapnik's for png8), the colour
    of a uniform tile is told from its pixels, not from bytes (empty-tile detection)."""
    for mode in ("RGB", "RGBA"):
        job = mapnik_worker.CutJob(source(mode), 512, 256, 256, CUTS, image_format)
        result = mapnik_worker.cut_image(job)
        assert result.uniform == {(5, 0, 0): (10, 120, 200, 255)}  # not (5, 0, 1): a red dot


def metatile_image(mode: str, transparent: bool = False) -> Image.Image:
    """A 3x2-tile image of 64 px tiles: flat tiles, busy ones; in RGBA, transparent pixels
    in the top right tile only when `transparent`."""
    image = Image.new(mode, (192, 128), (242, 239, 233, 255)[: len(mode)])
    for y in range(0, 128, 3):
        for x in range(64, 192):
            image.putpixel((x, y), (x % 256, (5 * y) % 256, 90, 255)[: len(mode)])
    if transparent:
        image.putpixel((150, 10), (1, 2, 3, 0))
        image.putpixel((151, 10), (1, 2, 3, 128))
    return image


def png_of(image: Image.Image, unfiltered: bool) -> bytes:
    """The image as MapServer writes it (no row filter), or as Pillow does (filtered)."""
    if unfiltered:
        return png_encoder.encode(image.tobytes(), image.width, image.height, image.mode, 6)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


META_CUTS = tuple((9, r, c, 64 * c, 64 * r) for r in range(2) for c in range(3))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("first", range(6))
def test_unfiltered_answers_give_the_tiles_of_pillows_decoding(mode: str, first: int) -> None:
    """A WMS answer read as it is (`png_decoder`) gives byte for byte the tiles of Pillow's
    decoding, the same uniform colours, and its first tile first, once."""
    image = metatile_image(mode)
    cuts = (META_CUTS[first], *META_CUTS[:first], *META_CUTS[first + 1 :])
    assert png_decoder.read(png_of(image, True)) is not None
    assert png_decoder.read(png_of(image, False)) is not None  # read, but rows are filtered
    sent: list[bytes] = []
    fast_uniform: dict[tuple[int, int, int], tuple[int, int, int, int]] = {}
    fast = pillow_cut.cut(png_of(image, True), 192, 128, cuts, 64, Encoding("PNG", 1),
                          fast_uniform, sent.append)  # fmt: skip
    plain_cut._SOLID.clear()  # nothing in common with the first cut but the encoder
    slow_uniform: dict[tuple[int, int, int], tuple[int, int, int, int]] = {}
    slow = pillow_cut.cut(png_of(image, False), 192, 128, cuts, 64, Encoding("PNG", 1),
                          slow_uniform)  # fmt: skip
    assert list(fast) == list(slow) == [cut[:3] for cut in cuts]
    assert fast == slow
    assert fast_uniform == slow_uniform == {(9, 0, 0): (242, 239, 233, 255),
                                            (9, 1, 0): (242, 239, 233, 255)}  # fmt: skip
    assert sent == [fast[cuts[0][:3]]]
    for (_, row, col), data in fast.items():
        tile = decoded(data)
        assert tile.mode == "RGB"  # opaque: as Pillow's path, RGB even from RGBA
        expected = image.crop((64 * col, 64 * row, 64 * col + 64, 64 * row + 64))
        assert tile.tobytes() == expected.convert("RGB").tobytes()


def test_in_a_half_transparent_answer_each_tile_is_rgba_where_it_has_transparency() -> None:
    image = metatile_image("RGBA", transparent=True)
    tiles = pillow_cut.cut(png_of(image, True), 192, 128, META_CUTS, 64, Encoding("PNG", 1))
    for (_, row, col), data in tiles.items():
        tile = decoded(data)
        assert tile.mode == ("RGBA" if (row, col) == (0, 2) else "RGB")
        expected = image.crop((64 * col, 64 * row, 64 * col + 64, 64 * row + 64))
        assert tile.convert("RGBA").tobytes() == expected.tobytes()


def filtered_below(image: Image.Image, row: int) -> bytes:
    """An RGB PNG with no row filter down to `row`, then each row with filter 2 (up)."""
    stride = 3 * image.width
    pixels = image.tobytes()
    lines = []
    for y in range(image.height):
        line = pixels[y * stride : (y + 1) * stride]
        if y < row:
            lines.append(b"\x00" + line)
        else:
            above = pixels[(y - 1) * stride : y * stride]
            lines.append(b"\x02" + bytes((a - b) % 256 for a, b in zip(line, above, strict=True)))
    return png_of_stream(image, zlib.compress(b"".join(lines)))


def png_of_stream(image: Image.Image, stream: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)
    return (
        png_decoder.SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", stream)
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("filtered_from", [10, 100])
def test_a_filtered_row_leaves_the_rest_to_pillow(filtered_from: int) -> None:
    """A filtered row below the first tile: the first tile, from rows with no filter, is
    sent, the others come from Pillow's decoding, the first not sent again. One within
    the first tile's rows: Pillow's decoding sends it. Sent once either way."""
    image = metatile_image("RGB")
    data = filtered_below(image, filtered_from)
    assert Image.open(io.BytesIO(data)).tobytes() == image.tobytes()
    sent: list[bytes] = []
    tiles = pillow_cut.cut(data, 192, 128, META_CUTS, 64, Encoding("PNG", 1), None, sent.append)
    assert sent == [tiles[(9, 0, 0)]]
    for (_, row, col), tile in tiles.items():
        expected = image.crop((64 * col, 64 * row, 64 * col + 64, 64 * row + 64))
        assert decoded(tile).tobytes() == expected.tobytes()


def test_an_unfiltered_answer_whose_data_breaks_off_is_refused() -> None:
    image = metatile_image("RGB")
    stream = zlib.compress(b"".join(b"\x00" + image.tobytes()[i : i + 576]
                                    for i in range(0, 576 * 128, 576)))  # fmt: skip
    data = png_of_stream(image, stream[: len(stream) // 2])  # its chunks' CRCs right
    assert png_decoder.read(data) is not None
    with pytest.raises(NotAnImage, match="not a readable image"):
        pillow_cut.cut(data, 192, 128, META_CUTS, 64, Encoding("PNG", 1), None, lambda _: None)
