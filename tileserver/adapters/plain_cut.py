"""A plain PNG (MapServer's GetMap answers: `png_decoder`) cut into PNG tiles in one pass
over its rows, as its bytes arrive; in the render processes.

Each tile's rows are sliced out of each band of inflated rows as it comes, and the
bands dropped: every row is inflated once (no second pass for the first tile, no
metatile-sized buffer). The first tile (answer first) is encoded and handed over as soon
as its last row is in, while the rest of the answer is still coming: its rows are those of
chunks whose CRCs were right, inflated from a stream whole so far, so its pixels are those
of the whole answer; an answer that breaks off below them fails the metatile as before
(nothing of it stored), its first tile already answered. MapServer sends its PNG as it
deflates it, over 10-50 ms for a 2112 px metatile: a tile in the top rows is answered that
much sooner. The other tiles are encoded as they are whole (`eager`), or when the caller
has time (`encode_one`: while it waits for more of the answer). No numpy: `generate_tiles` cuts in
threads of a command that must not load it (`threaded_cut`; figures: benchmarks/RESULTS.md,
issue 15, phase 5).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from tileserver.adapters import png_decoder, png_encoder

Cut = tuple[int, int, int, int, int]  # a tile's z, row, col and its x, y in the image
Uniform = dict[tuple[int, int, int], tuple[int, int, int, int]]  # (z, row, col): RGBA
FirstDone = Callable[[bytes], None]  # called with the first tile of `cuts`, once encoded
Rows = list[bytes]  # a tile's rows of pixels, top to bottom

# Encoded single-colour tiles (sea, land, empty: often a third of a metatile), encoded
# once per render process, as MapCache does with its blank tiles: key -> bytes.
_SOLID: dict[tuple[object, ...], bytes] = {}
_SOLID_MAX = 4096


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
        while self._ready:
            self.encode_one()
        return {cut[:3]: self._tiles[cut[:3]] for cut in self._cuts}

    def _fill(self, first: int, band: bytes, stride: int) -> None:
        count = len(band) // stride
        channels = len(self._mode)
        size = self._size
        width = size * channels
        for top in [t for t in self._waiting if t < first + count and t + size > first]:
            low, high = max(top, first), min(top + size, first + count)
            rows_in_band = range((low - first) * stride + 1, (high - first) * stride, stride)
            for cut in self._waiting[top]:
                rows = self._rows.get(cut)
                if rows is None:
                    rows = self._rows[cut] = []
                offset = cut[3] * channels
                rows.extend(band[i + offset : i + offset + width] for i in rows_in_band)
            if high == top + size:  # these tiles are whole
                for cut in self._waiting.pop(top):
                    if cut == self._first:
                        self._ready.appendleft(cut)
                        self._encode(self._ready.popleft())
                    elif self._eager:
                        self._encode(cut)
                    else:
                        self._ready.append(cut)

    def _encode(self, cut: Cut) -> None:
        rows = self._rows.pop(cut)
        encoded = _encode_tile(rows, self._size, self._mode, cut[:3], self._uniform, self._level)
        self._tiles[cut[:3]] = encoded
        if cut == self._first and self._first_done is not None:
            self.first_sent = True
            self._first_done(encoded)


def _encode_tile(
    rows: Rows,
    size: int,
    mode: str,
    coord: tuple[int, int, int],
    uniform: Uniform | None,
    level: int,
) -> bytes:
    """A PNG tile of `rows`; an RGBA tile whose every pixel is opaque is encoded as RGB
    (the same pixels, less to deflate); a tile of one colour is encoded once per process
    (and its colour goes in `uniform`)."""
    if mode == "RGBA" and b"".join(row[3::4] for row in rows).count(255) == size * size:
        opaque = []
        for row in rows:
            pixels = bytearray(row)
            del pixels[3::4]
            opaque.append(bytes(pixels))
        rows, mode = opaque, "RGB"
    channels = len(mode)
    first = rows[0]
    pixel = first[:channels]
    # One colour: the first row is one pixel repeated, and every row is the first.
    if first == pixel * size and rows.count(first) == size:
        if uniform is not None:
            uniform[coord] = rgba(pixel)
        key = (mode, pixel, size, level)
        encoded = _SOLID.get(key)
        if encoded is None:
            encoded = png_encoder.encode_rows(rows, mode, level)
            keep_solid(key, encoded)
        return encoded
    return png_encoder.encode_rows(rows, mode, level)
