"""The rows of a PNG as MapServer writes its GetMap answers (8-bit RGB or RGBA, no row
filter), read straight from its deflate stream as its bytes arrive; no image is decoded.

Runs in the render processes. MapServer, like `png_encoder`, gives every row filter type 0
(none): a row's pixels are the inflated bytes as they are. Inflating them with ISA-L takes
about 5-10 ms for a 2112 px metatile, where Pillow took 25-35 ms to decode it and 15 more
to copy its pixels out (`tobytes`), most of those 15 the kernel mapping in the pages of a
fresh 13 MB buffer (the render processes give such buffers back: `process_memory`). Here
the rows come in bands far smaller than glibc's mmap and trim thresholds, each dropped once
sliced, so no metatile-sized buffer is ever made (figures: benchmarks/RESULTS.md, issue 15,
phases 3 and 5). `PlainReader` takes the answer in pieces, as it comes off the network:
each chunk is used once it is whole and its CRC right. Any other PNG (palette, grey,
16-bit, interlaced, a transparency chunk, a filtered row) is left to Pillow: `read`
answers None, the reader raises NotPlain.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from isal import isal_zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")
_BAND_BYTES = 64 * 1024  # inflated per step: a few rows, far below glibc's 128 KB trim threshold
_MODES = {2: "RGB", 6: "RGBA"}  # PNG colour type: Pillow's mode
_INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)  # its stub declares an instance
_MAX_CHUNK = 1 << 31  # PNG's own limit on a chunk's length


class NotPlain(ValueError):
    """Not an 8-bit RGB or RGBA PNG whose rows have no filter, whole, with right CRCs."""


@dataclass(frozen=True, slots=True)
class Header:
    width: int
    height: int
    mode: str  # RGB or RGBA

    @property
    def stride(self) -> int:
        """Bytes per inflated row: the filter type, then the pixels."""
        return 1 + self.width * len(self.mode)


def _header(body: bytes | memoryview) -> Header:
    width, height, depth, colour_type, compression, row_filter, interlace = _IHDR.unpack(body)
    mode = _MODES.get(colour_type)
    if mode is None or (depth, compression, row_filter, interlace) != (8, 0, 0, 0):
        raise NotPlain("not an 8-bit RGB or RGBA PNG, not interlaced")
    if not width or not height:
        raise NotPlain("an empty image")
    return Header(width, height, mode)


class PlainReader:
    """Reads a plain PNG's rows from its bytes, given in pieces of any size (`feed`), and
    says once every byte is in whether it was whole (`close`)."""

    def __init__(self) -> None:
        self.header: Header | None = None
        # IEND read: every chunk up to it was whole and its CRC right
        self.complete = False
        self.idat_seen = False
        self._pending: bytes = b""  # the start of a chunk not yet whole
        self._started = False  # the signature read
        self._inflate = isal_zlib.decompressobj()
        self._row = 0  # rows handed out
        self._parts: list[bytes] = []  # the band being inflated
        self._size = 0

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[tuple[int, bytes]]:
        """(index of its first row, the rows) of each band of rows whole once data is added,
        top to bottom, each row its filter byte then its pixels. Raises NotPlain."""
        for body in self.chunks(data):  # every whole chunk checked before a row is used
            yield from self._rows(body)

    def chunks(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """The data of the IDAT chunks whole once data is added; checks each chunk (its
        CRC, the header) and keeps the start of one not yet whole. Raises NotPlain."""
        source = self._pending + data if self._pending else data
        view = memoryview(source)
        offset = 0
        if not self._started:
            if len(view) < len(SIGNATURE):
                self._pending = bytes(view)
                return []
            if view[: len(SIGNATURE)] != SIGNATURE:
                raise NotPlain("not a PNG")
            self._started, offset = True, len(SIGNATURE)
        idat: list[memoryview] = []
        while not self.complete and offset + _CHUNK.size <= len(view):
            length, kind = _CHUNK.unpack_from(view, offset)
            start = offset + _CHUNK.size
            end = start + length
            if length >= _MAX_CHUNK:
                raise NotPlain("a chunk longer than PNG allows")
            if end + 4 > len(view):
                break  # not whole yet
            body = view[start:end]
            (crc,) = struct.unpack_from(">I", view, end)
            if zlib.crc32(body, zlib.crc32(kind)) != crc:
                raise NotPlain(f"a wrong CRC in a {kind!r} chunk")
            offset = end + 4
            if self.header is None:
                if kind != b"IHDR" or length != _IHDR.size:
                    raise NotPlain("no header first")
                self.header = _header(body)
            elif kind == b"IDAT":
                idat.append(body)
                self.idat_seen = self.idat_seen or length > 0
            elif kind == b"IEND":
                self.complete = True
            elif kind in (b"PLTE", b"tRNS"):
                raise NotPlain("a palette or a transparent colour: Pillow's modes")
        self._pending = b"" if self.complete else bytes(view[offset:])
        return idat

    def _rows(self, data: memoryview) -> Iterator[tuple[int, bytes]]:
        header = self.header
        assert header is not None  # IDAT chunks come after it
        stride = header.stride
        per_band = max(1, _BAND_BYTES // stride)
        pending: bytes | memoryview = data
        try:
            while self._row < header.height:
                rows = min(per_band, header.height - self._row)
                part = self._inflate.decompress(pending, rows * stride - self._size)
                pending = self._inflate.unconsumed_tail
                if not part:
                    return  # the rest is in the next chunks
                self._parts.append(part)
                self._size += len(part)
                if self._size == rows * stride:
                    band = part if len(self._parts) == 1 else b"".join(self._parts)
                    self._parts, self._size = [], 0
                    if band[::stride].count(0) != rows:
                        raise NotPlain(f"a row filter in rows {self._row} to {self._row + rows}")
                    yield self._row, band
                    self._row += rows
            # Past the last row, only the stream's checksum may follow.
            if pending and self._inflate.decompress(pending, 1):
                raise NotPlain(f"more image data than {header.height} rows")
        except _INFLATE_ERROR as exc:
            raise NotPlain(f"broken image data ({exc})") from exc

    def close(self) -> None:
        """Raises NotPlain unless the PNG was whole: every row, the stream's end and IEND."""
        if self.header is None or not self.complete:
            raise NotPlain("the PNG ends early")
        if self._row < self.header.height:
            raise NotPlain(f"the image data ends in row {self._row}")
        try:
            if not self._inflate.eof and self._inflate.decompress(b"", 1):
                raise NotPlain(f"more image data than {self.header.height} rows")
        except _INFLATE_ERROR as exc:
            raise NotPlain(f"broken image data ({exc})") from exc
        if not self._inflate.eof:
            raise NotPlain("the image data ends early")


@dataclass(frozen=True, slots=True)
class PlainPng:
    """A whole PNG read as plain: its header, its rows not yet inflated."""

    width: int
    height: int
    mode: str
    data: bytes

    @property
    def stride(self) -> int:
        return 1 + self.width * len(self.mode)

    def bands(self) -> Iterator[tuple[int, bytes]]:
        """The bands of rows of `PlainReader.feed`, then its `close` check."""
        reader = PlainReader()
        yield from reader.feed(self.data)
        reader.close()


def read(data: bytes) -> PlainPng | None:
    """data as a PlainPng when its header and chunks are (every CRC right, up to IEND);
    None when not (Pillow reads it, or tells what is wrong). Its rows: `bands`."""
    reader = PlainReader()
    try:
        reader.chunks(data)
    except NotPlain:
        return None
    header = reader.header
    if header is None or not reader.complete or not reader.idat_seen:
        return None
    return PlainPng(header.width, header.height, header.mode, data)
