from __future__ import annotations

import hashlib
import io

import pytest
import yaml
from PIL import Image

from tileserver.config import EmptyTile
from tileserver.empty_tiles import colour_count, detection_yaml, is_empty, signature


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
