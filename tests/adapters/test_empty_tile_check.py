"""Whether a layer's empty_tile_detection hash can match what this server encodes: said
where it never can (issue 13), with the encoders of the render processes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from tests.support.configs import single_layer
from tileserver.adapters.empty_tile_check import never_matches, uniform_tile_sizes
from tileserver.adapters.mapnik_worker import CutJob, cut_image


def uniform(colour: tuple[int, int, int], image_format: str) -> bytes:
    """A tile of one colour as the render processes encode it."""
    out = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(out, "PNG")
    job = CutJob(out.getvalue(), 256, 256, 256, ((0, 0, 0, 0, 0),), image_format)
    return cut_image(job).tiles[(0, 0, 0)]


def detection(data: bytes) -> dict[str, object]:
    return {"size": len(data), "hash": hashlib.sha1(data).hexdigest()}


def test_a_hash_of_a_tile_encoded_elsewhere_never_matches_and_says_what_to_do(
    tmp_path: Path,
) -> None:
    # Plain sea as TileCloud-chain's encoder writes it (zlib level 6), on a layer that
    # encodes at zlib level 1 (tileserver's default): no uniform tile of ours is that small.
    sea = uniform((170, 211, 223), "png")
    layer = single_layer(tmp_path, output_format="png:z=1", empty_tile_detection=detection(sea))
    sizes = uniform_tile_sizes("png:z=1", 256)
    assert all(abs(len(sea) - size) > 20 for size in sizes)  # no uniform tile of ours
    message = never_matches(layer)
    assert message is not None
    assert message.startswith(
        f"layers.l.empty_tile_detection: no tile of one colour this server encodes for the "
        f"layer (png:z=1, 256x256) is {len(sea)} bytes (they are {sizes[0]} to {sizes[-1]} "
        "bytes, in a few sizes)"
    )
    assert "Add `color:`" in message


@pytest.mark.parametrize("image_format", ["png:z=1", "png", "png8", "jpeg85"])
def test_a_hash_of_our_own_encoder_may_match(tmp_path: Path, image_format: str) -> None:
    sea = uniform((170, 211, 223), image_format)
    extension = "jpeg" if image_format.startswith("jpeg") else "png"
    layer = single_layer(tmp_path, output_format=image_format, extension=extension,
                         empty_tile_detection=detection(sea))  # fmt: skip
    assert never_matches(layer) is None


def test_a_detection_by_colour_is_left_alone(tmp_path: Path) -> None:
    sea = uniform((170, 211, 223), "png")
    layer = single_layer(tmp_path, output_format="png:z=1",
                         empty_tile_detection={**detection(sea), "color": "#aad3df"})  # fmt: skip
    assert never_matches(layer) is None
    assert never_matches(single_layer(tmp_path)) is None  # no detection at all
