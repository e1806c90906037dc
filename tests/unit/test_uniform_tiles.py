"""Uniform tiles: colours as the configuration writes them, colours read from encoded
tiles, and the uniform tiles TileCloud-chain's empty-tile hashes are of (issue 13)."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from tileserver.uniform_tiles import (
    format_colour,
    identify,
    parse_colour,
    same_colour,
    uniform_colour,
)

# empty_tile_detection of TileCloud-chain's own test configuration and of its 1.x
# scaffold's `ortho` layer (../shared/tcc-configs): values its users carry.
TCC_PNG = (334, "dd6cb45962bccb3ad2450ab07011ef88f766eda8")
TCC_JPEG = (1651, "2892fea0a474228f5d66a534b0b5231d923696da")


def encoded(mode: str, colour: tuple[int, ...], image_format: str = "PNG", **options: int) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (256, 256), colour).save(out, image_format, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("text", "colour"),
    [("transparent", (0, 0, 0, 0)), ("#fff", (255, 255, 255, 255)),
     ("#AAD3DF", (170, 211, 223, 255)), ("#aad3df80", (170, 211, 223, 128))],
)  # fmt: skip
def test_colours_are_read_and_written_back(text: str, colour: tuple[int, int, int, int]) -> None:
    assert parse_colour(text) == colour
    assert parse_colour(format_colour(colour)) == colour


@pytest.mark.parametrize("text", ["white", "#ff", "aad3df", "#gggggg", ""])
def test_other_colours_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'transparent' or '#rrggbb"):
        parse_colour(text)


def test_transparent_is_transparent_whatever_its_other_channels() -> None:
    assert same_colour((12, 34, 56, 0), (0, 0, 0, 0))
    assert not same_colour((12, 34, 56, 1), (0, 0, 0, 0))
    assert same_colour((1, 2, 3, 255), (1, 2, 3, 255))
    assert not same_colour((1, 2, 3, 255), (1, 2, 4, 255))


def test_uniform_colour_of_encoded_tiles() -> None:
    assert uniform_colour(encoded("RGB", (170, 211, 223))) == (170, 211, 223, 255)
    assert uniform_colour(encoded("RGBA", (9, 9, 9, 0))) == (0, 0, 0, 0)
    assert uniform_colour(encoded("RGB", (255, 255, 255), "JPEG", quality=60)) == (255,) * 4
    striped = Image.new("RGB", (256, 256), (0, 0, 0))
    striped.putpixel((200, 3), (0, 0, 1))
    out = io.BytesIO()
    striped.save(out, "PNG")
    assert uniform_colour(out.getvalue()) is None
    assert uniform_colour(b"not an image") is None


def test_tilecloud_chains_hashes_are_a_transparent_png_and_a_white_jpeg() -> None:
    assert identify(*TCC_PNG, 256, "png") == ((0, 0, 0, 0), "PNG, zlib level 6")
    assert identify(*TCC_JPEG, 256, "jpeg") == ((255, 255, 255, 255), "JPEG, quality 75")
    # Looked up among the encodings of the layer's own format only.
    assert identify(*TCC_PNG, 256, "jpeg") is None
    # Pillow's PNG writer, at any level, is looked up too.
    data = encoded("RGBA", (0, 0, 0, 0), compress_level=9)
    assert identify(len(data), hashlib.sha1(data).hexdigest(), 256, "png") is not None


def test_a_hash_of_any_other_tile_is_not_identified() -> None:
    sea = encoded("RGB", (170, 211, 223))
    assert identify(len(sea), hashlib.sha1(sea).hexdigest(), 256, "png") is None
    assert identify(*TCC_PNG, 512, "png") is None  # a 256-pixel tile's hash
