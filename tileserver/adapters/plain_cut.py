"""A plain PNG (MapServer's GetMap answers: `png_decoder`) cut into PNG tiles in one pass
over its rows, as its bytes arrive; in the render processes.

Each tile's rows are copied out of each band of inflated rows (numpy: one copy per band
and tile, not one slice per row) into the tile's PNG image data, the filter byte of each
row already in place, which ISA-L deflates as it is (`png_encoder.encode_filtered`). The
first tile (answer first) is encoded as soon as its last row is in, and handed over once
the answer's chunks are all in through IEND with right CRCs; the other tiles are encoded
as they are whole (`eager`), or when the caller has time (`encode_one`: while it waits for
more of the answer). Tile buffers are kept for the next tiles, a few per process, so that
no page is faulted in per tile (figures: benchmarks/RESULTS.md, issue 15, phase 5).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tileserver.adapters import png_decoder, png_encoder

Cut = tuple[int, int, int, int, int]  # a tile's z, row, col and its x, y in the image
Uniform = dict[tuple[int, int, int], tuple[int, int, int, int]]  # (z, row, col): RGBA
FirstDone = Callable[[bytes], None]  # called with the first tile of `cuts`, once encoded
Rows = npt.NDArray[np.uint8]  # a tile's rows, each its filter byte (0) then its pixels

# Encoded single-colour tiles (sea, land, empty: often a third of a metatile), encoded
# once per render process, as MapCache does with its blank tiles: key -> bytes.
_SOLID: dict[tuple[object, ...], bytes] = {}
_SOLID_MAX = 4096
_SPARE: dict[tuple[int, int], list[Rows]] = {}  # tile buffers to use again, by shape
_SPARE_MAX = 16  # about two rows of tiles: 3-4 MB


def keep_solid(key: tuple[object, ...], encoded: bytes) -> None:
    if len(_SOLID) >= _SOLID_MAX:
        _SOLID.clear()
    _SOLID[key] = encoded


def solid(key: tuple[object, ...]) -> bytes | None:
    return _SOLID.get(key)


def rgba(pixel: bytes) -> tuple[int, int, int, int]:
    """An RGB or RGBA pixel as RGBA (the colour of a uniform tile, for empty tiles)."""
    red, green, blue, alpha = (*pixel, 255)[:4]
    return (red, green, blue, alpha)


def inside(x: int, y: int, size: int, width: int, height: int) -> None:
    if x < 0 or y < 0 or x + size > width or y + size > height:
        raise ValueError(f"tile at ({x}, {y}) is outside the {width}x{height} image")


def _buffer(size: int, line: int) -> Rows:
    try:
        return _SPARE[(size, line)].pop()  # atomic: cuts may run in threads (threaded_cut)
    except (KeyError, IndexError):
        pass
    rows: Rows = np.empty((size, line), np.uint8)
    rows[:, 0] = 0  # filter type 0 (none) before each row; never written again
    return rows


def _give_back(rows: Rows) -> None:
    spare = _SPARE.setdefault((rows.shape[0], rows.shape[1]), [])
    if len(spare) < _SPARE_MAX:
        spare.append(rows)


class SizeMismatch(ValueError):
    """The PNG is not of the size expected (the message says which)."""


class PlainCut:
    """Feed it the answer's bytes (`feed`), then `finish`: the encoded tiles. Raises
    NotPlain (png_decoder) for a PNG it cannot read as it is: Pillow's turn, with the
    whole answer; SizeMismatch for a PNG of another size."""

    def __init__(
        self,
        width: int,
        height: int,
        cuts: tuple[Cut, ...],
        size: int,
        level: int,
        uniform: Uniform | None = None,
        first_done: FirstDone | None = None,
        eager: bool = True,
    ) -> None:
        for cut in cuts:
            inside(cut[3], cut[4], size, width, height)
        self._reader = png_decoder.PlainReader()
        self._width, self._height, self._size, self._level = width, height, size, level
        self._cuts = cuts
        self._first = cuts[0] if first_done is not None and cuts else None
        self._first_done = first_done
        self.first_sent = False
        self._uniform = uniform
        self._eager = eager
        self._waiting: dict[int, list[Cut]] = {}  # by top row: tiles not whole yet
        for cut in cuts:
            self._waiting.setdefault(cut[4], []).append(cut)
        self._rows: dict[Cut, Rows] = {}
        self._ready: deque[Cut] = deque()  # whole, not encoded yet
        self._tiles: dict[tuple[int, int, int], bytes] = {}
        self._mode = ""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        for first, band in self._reader.feed(data):
            header = self._reader.header
            assert header is not None
            if not self._mode:
                if (header.width, header.height) != (self._width, self._height):
                    raise SizeMismatch(
                        f"an image of {header.width}x{header.height} pixels instead of "
                        f"{self._width}x{self._height}"
                    )
                self._mode = header.mode
            self._fill(first, band, header.stride)
        self._hand_over_first()

    @property
    def has_ready(self) -> bool:
        """Tiles whole and not encoded yet (see `encode_one`)."""
        return bool(self._ready)

    def encode_one(self) -> None:
        """Encodes the next whole tile (the first tile first)."""
        self._encode(self._ready.popleft())

    def finish(self) -> dict[tuple[int, int, int], bytes]:
        """Once every byte is fed: checks that the PNG was whole (NotPlain), encodes the
        tiles not encoded yet; the tiles, in the order of `cuts`."""
        self._reader.close()
        self._hand_over_first()
        while self._ready:
            self.encode_one()
        return {cut[:3]: self._tiles[cut[:3]] for cut in self._cuts}

    def _fill(self, first: int, band: bytes, stride: int) -> None:
        count = len(band) // stride
        pixels = np.frombuffer(band, np.uint8).reshape(count, stride)
        channels = len(self._mode)
        size = self._size
        line = 1 + size * channels
        for top in [t for t in self._waiting if t < first + count and t + size > first]:
            low, high = max(top, first), min(top + size, first + count)
            for cut in self._waiting[top]:
                rows = self._rows.get(cut)
                if rows is None:
                    rows = self._rows[cut] = _buffer(size, line)
                start = 1 + cut[3] * channels
                rows[low - top : high - top, 1:] = pixels[
                    low - first : high - first, start : start + size * channels
                ]
            if high == top + size:  # these tiles are whole
                for cut in self._waiting.pop(top):
                    if cut == self._first:
                        self._ready.appendleft(cut)
                        self._encode(self._ready.popleft())
                    elif self._eager:
                        self._encode(cut)
                    else:
                        self._ready.append(cut)

    def _hand_over_first(self) -> None:
        first = self._first
        if self.first_sent or first is None or not self._reader.complete:
            return
        encoded = self._tiles.get(first[:3])
        if encoded is not None and self._first_done is not None:
            self.first_sent = True
            self._first_done(encoded)

    def _encode(self, cut: Cut) -> None:
        rows = self._rows.pop(cut)
        self._tiles[cut[:3]] = _encode_tile(rows, self._mode, cut[:3], self._uniform, self._level)
        _give_back(rows)
        if cut == self._first:
            self._hand_over_first()


def _encode_tile(
    rows: Rows, mode: str, coord: tuple[int, int, int], uniform: Uniform | None, level: int
) -> bytes:
    """A PNG tile of `rows` (filter bytes included); an RGBA tile whose every pixel is
    opaque is encoded as RGB (the same pixels, less to deflate); a tile of one colour is
    encoded once per process (and its colour goes in `uniform`)."""
    size = rows.shape[0]
    if mode == "RGBA":
        alpha = rows[:, 4::4]
        if bool((alpha == 255).all()):
            opaque: Rows = np.empty((size, 1 + size * 3), np.uint8)
            opaque[:, 0] = 0
            opaque[:, 1:].reshape(size, size, 3)[:] = rows[:, 1:].reshape(size, size, 4)[..., :3]
            rows, mode = opaque, "RGB"
    channels = len(mode)
    first = rows[0, 1:]
    pixel = first[:channels]
    flat = rows.reshape(-1)
    line = rows.shape[1]
    # One colour: the first row is one pixel repeated, and every row is the one above it.
    if bool((first.reshape(size, channels) == pixel).all()) and bool(
        (flat[line:] == flat[:-line]).all()
    ):
        colour = pixel.tobytes()
        if uniform is not None:
            uniform[coord] = rgba(colour)
        key = (mode, colour, size, level)
        encoded = _SOLID.get(key)
        if encoded is None:
            encoded = png_encoder.encode_filtered(rows.data, size, size, mode, level)
            keep_solid(key, encoded)
        return encoded
    return png_encoder.encode_filtered(rows.data, size, size, mode, level)
