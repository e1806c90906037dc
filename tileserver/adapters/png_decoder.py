"""The rows of a PNG as MapServer writes its GetMap answers (8-bit RGB or RGBA, no row
filter), read straight from its deflate stream, a few rows at a time; no image is decoded.

Runs in the render processes. MapServer, like `png_encoder`, gives every row filter type 0
(none): a row's pixels are the inflated bytes as they are. Inflating them with ISA-L takes
about 10 ms for a 2112 px metatile, where Pillow took 25-35 ms to decode it and 15 more to
copy its pixels out (`tobytes`), most of those 15 the kernel mapping in the pages of a
fresh 13 MB buffer (the render processes give such buffers back: `process_memory`). Here
the rows come in bands far smaller than glibc's mmap and trim thresholds, each dropped once
sliced, so no metatile-sized buffer is ever made (figures: benchmarks/RESULTS.md, issue 15,
phase 3). Any other PNG (palette, grey, 16-bit, interlaced, a transparency chunk, a
filtered row) is left to Pillow: `read` answers None, `bands` raises NotPlain.
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


class NotPlain(ValueError):
    """The deflate stream is not the rows the header announces, each with filter type 0."""


@dataclass(frozen=True, slots=True)
class PlainPng:
    """An 8-bit RGB or RGBA PNG, every chunk whole and its CRC right, up to IEND; its
    rows not yet inflated."""

    width: int
    height: int
    mode: str  # RGB or RGBA
    idat: tuple[memoryview, ...]  # the IDAT chunks' data, in order

    @property
    def stride(self) -> int:
        """Bytes per inflated row: the filter type, then the pixels."""
        return 1 + self.width * len(self.mode)

    def bands(self) -> Iterator[tuple[int, bytes]]:
        """(index of its first row, the rows) of successive bands of rows, top to bottom,
        each row its filter byte then its pixels. Raises NotPlain on a row with a filter,
        and once the last row is read, on a stream that ends early or goes on."""
        stride = self.stride
        per_band = max(1, _BAND_BYTES // stride)
        inflate = isal_zlib.decompressobj()
        chunks = self.idat
        taken = 0  # chunks given to the inflater
        pending: bytes | memoryview = b""
        try:
            for first in range(0, self.height, per_band):
                wanted = min(per_band, self.height - first) * stride
                parts = []
                size = 0
                while size < wanted:
                    if not pending and taken < len(chunks):
                        pending, taken = chunks[taken], taken + 1
                    # Without input, what the inflater still holds.
                    part = inflate.decompress(pending, wanted - size)
                    pending = inflate.unconsumed_tail
                    if not part and (inflate.eof or (not pending and taken == len(chunks))):
                        raise NotPlain(f"the image data ends in row {first + size // stride}")
                    parts.append(part)
                    size += len(part)
                band = parts[0] if len(parts) == 1 else b"".join(parts)
                if band[::stride].count(0) != wanted // stride:
                    raise NotPlain(f"a row filter in rows {first} to {first + wanted // stride}")
                yield first, band
            while not inflate.eof:  # only the stream's checksum may follow the last row
                exhausted = not pending and taken == len(chunks)
                if not pending and not exhausted:
                    pending, taken = chunks[taken], taken + 1
                if inflate.decompress(pending, 1):
                    raise NotPlain(f"more image data than {self.height} rows")
                pending = inflate.unconsumed_tail
                if exhausted and not inflate.eof:
                    raise NotPlain("the image data ends early")
        except _INFLATE_ERROR as exc:
            raise NotPlain(f"broken image data ({exc})") from exc


def read(data: bytes) -> PlainPng | None:
    """data as a PlainPng; None when it is not one (Pillow reads it, or tells what is wrong)."""
    if not data.startswith(SIGNATURE):
        return None
    view = memoryview(data)
    offset = len(SIGNATURE)
    header: tuple[int, ...] | None = None
    idat: list[memoryview] = []
    while offset + _CHUNK.size <= len(data):
        length, kind = _CHUNK.unpack_from(data, offset)
        start = offset + _CHUNK.size
        end = start + length
        if end + 4 > len(data):
            return None  # truncated
        body = view[start:end]
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            return None
        offset = end + 4
        if kind == b"IHDR" and header is None and length == _IHDR.size:
            header = _IHDR.unpack(body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif kind in (b"PLTE", b"tRNS") or header is None:
            return None  # a transparent colour or a palette: Pillow's modes, not plain RGB
    else:
        return None  # no IEND
    if header is None or not any(idat):
        return None
    width, height, depth, colour_type, compression, row_filter, interlace = header
    mode = _MODES.get(colour_type)
    if mode is None or (depth, compression, row_filter, interlace) != (8, 0, 0, 0):
        return None
    if not width or not height:
        return None
    return PlainPng(width, height, mode, tuple(idat))
