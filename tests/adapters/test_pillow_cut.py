"""Cutting WMS answers with Pillow: the same pixels as Mapnik's cut, and clear refusals."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tileserver.adapters import mapnik_worker, pillow_cut
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
