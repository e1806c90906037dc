from __future__ import annotations

import dataclasses
import hashlib
import io

import pytest
import yaml
from PIL import Image

from tileserver.config import EmptyTile
from tileserver.empty_tiles import (
    colour_count,
    detection_yaml,
    is_empty,
    is_stored_empty,
    signature,
)


def png(colours: list[tuple[int, int, int]], size: int = 256) -> bytes:
    """A PNG with one vertical band per colour."""
    image = Image.new("RGB", (size, size), colours[0])
    band = size // len(colours)
    for i, colour in enumerate(colours[1:], start=1):
        image.paste(colour, (i * band, 0, size, size))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


SEA = png([(169, 207, 227)])


def test_signature_is_size_and_sha1_as_tilecloud_chain_computes_them() -> None:
    assert signature(b"abc") == EmptyTile(3, "a9993e364706816aba3e25717850c26c9cd0d89d")
    assert signature(SEA) == EmptyTile(len(SEA), hashlib.sha1(SEA).hexdigest())


@pytest.mark.parametrize(
    ("data", "detection", "expected"),
    [
        (SEA, signature(SEA), True),
        (SEA, None, False),
        (SEA + b"\0", signature(SEA), False),  # another size
        (b"x" * len(SEA), signature(SEA), False),  # same size, other bytes
        (SEA, EmptyTile(len(SEA), hashlib.sha1(SEA).hexdigest().upper()), True),
        (b"", EmptyTile(0, hashlib.sha1(b"").hexdigest()), True),
    ],
    ids=["match", "no detection", "other size", "other hash", "upper-case hash", "zero bytes"],
)
def test_is_empty(data: bytes, detection: EmptyTile | None, expected: bool) -> None:
    assert is_empty(data, detection) is expected


@pytest.mark.parametrize(
    ("colours", "expected"),
    [([(169, 207, 227)], 1), ([(0, 0, 0), (255, 255, 255)], 2), ([(1, 2, 3)] * 3, 1)],
)
def test_colour_count(colours: list[tuple[int, int, int]], expected: int) -> None:
    assert colour_count(png(colours)) == expected


def test_colour_count_tells_transparency_apart() -> None:
    image = Image.new("RGBA", (16, 16), (10, 20, 30, 255))
    image.putpixel((3, 3), (10, 20, 30, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    assert colour_count(out.getvalue()) == 2


def test_detection_yaml_pastes_under_a_layer() -> None:
    detection = EmptyTile(334, "dd6cb45962bccb3ad2450ab07011ef88f766eda8")
    text = detection_yaml(detection)
    assert "    empty_tile_detection:\n        size: 334\n" in text
    assert "        hash: dd6cb45962bccb3ad2450ab07011ef88f766eda8\n" in text
    assert "compatibility only" in text
    # Pasted under a layer of a file indented by 2 spaces, as TileCloud-chain's are.
    pasted = yaml.safe_load("layers:\n  osm:\n    title: Roads\n" + text)
    expected = {"size": 334, "hash": detection.hash}
    assert pasted["layers"]["osm"] == {
        "title": "Roads",
        "empty_tile_detection": expected,
        "empty_metatile_detection": expected,
    }


def test_a_tile_of_the_detections_colour_is_empty_whatever_its_bytes() -> None:
    sea = (169, 207, 227, 255)
    detection = EmptyTile(334, "dd6cb45962bccb3ad2450ab07011ef88f766eda8", color=sea)
    assert is_empty(SEA, detection, sea)  # the render saw a tile all of that colour
    assert not is_empty(SEA, detection, (169, 207, 228, 255))
    assert not is_empty(SEA, detection)  # not uniform, or nobody looked: bytes only
    by_colour_only = EmptyTile(None, None, color=(0, 0, 0, 0))
    assert is_empty(b"any bytes", by_colour_only, (40, 50, 60, 0))
    assert not is_empty(b"any bytes", by_colour_only)
    assert not is_empty(SEA, None, sea)


def test_a_stored_tile_is_decoded_for_its_colour_where_the_bytes_do_not_match() -> None:
    other_encoder = io.BytesIO()
    Image.new("RGB", (256, 256), (169, 207, 227)).save(other_encoder, "PNG", compress_level=1)
    assert other_encoder.getvalue() != SEA
    detection = EmptyTile(len(SEA), hashlib.sha1(SEA).hexdigest(), color=(169, 207, 227, 255))
    assert is_stored_empty(other_encoder.getvalue(), detection)
    assert is_stored_empty(SEA, dataclasses.replace(detection, color=None))
    assert not is_stored_empty(png([(169, 207, 227), (0, 0, 0)]), detection)


def test_detection_yaml_carries_the_colour() -> None:
    text = detection_yaml(EmptyTile(334, "ab" * 20, color=(170, 211, 223, 255)))
    block = yaml.safe_load("osm:\n" + text)["osm"]
    assert block["empty_tile_detection"] == {"size": 334, "hash": "ab" * 20, "color": "#aad3df"}
    assert "color" not in block["empty_metatile_detection"]
