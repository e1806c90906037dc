"""PNG files from raw 8-bit RGB or RGBA pixels: no row filter, one IDAT, ISA-L's deflate.

Runs in the render processes. Map tiles are mostly flat colours, which deflate well as
they are, so every row gets filter type 0 (none) rather than the per-row search of libpng
(Mapnik) or Pillow: that alone halves the time. The deflate of the fast levels is Intel's
ISA-L (python-isal), several times faster again than zlib at the same level, its output
no larger (benchmarks/bench_encoders.py, figures in benchmarks/RESULTS.md). Decoders see
an ordinary PNG; the pixels are exactly those given. The bytes are not always the same for
the same pixels: in a test run on a loaded machine, ISA-L once in a few hundred tiles took
another, equally valid match (cause not found). Compare tiles of two runs by their pixels.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from isal import isal_zlib

Buffer = bytes | bytearray | memoryview  # (typing.Buffer from Python 3.12)

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# mode: (bytes per pixel, PNG colour type: 2 truecolour, 6 truecolour with alpha)
_COLOUR_TYPES = {"RGB": (3, 2), "RGBA": (4, 6)}
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
_ISAL_LEVELS = (1, 2, 3)  # ISA-L's levels; its 0 is a fast deflate, not zlib's "stored"


def encode(pixels: bytes, width: int, height: int, mode: str, level: int) -> bytes:
    """An 8-bit PNG of `pixels` (rows top to bottom, `mode` RGB or RGBA), deflated at the
    zlib `level` of an encoder name (`png:z=N`; -1 is zlib's default, 6): 0 stores, 1 to 3
    are ISA-L's levels 1 to 3, 4 to 9 zlib's own, for the smallest files."""
    stride = width * _COLOUR_TYPES[mode][0]
    if len(pixels) != stride * height:
        raise ValueError(f"{len(pixels)} bytes for {width}x{height} {mode} pixels")
    return encode_rows([pixels[i : i + stride] for i in range(0, len(pixels), stride)], mode, level)


def encode_rows(rows: Sequence[bytes], mode: str, level: int) -> bytes:
    """As `encode`, for the image's rows of pixels, top to bottom (all of one length)."""
    channels = _COLOUR_TYPES[mode][0]
    width, rest = divmod(len(rows[0]), channels)
    if rest or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(f"rows of {sorted({len(row) for row in rows})} bytes for {mode} pixels")
    filtered = b"\x00" + b"\x00".join(rows)  # filter type 0 before each row
    return encode_filtered(filtered, width, len(rows), mode, level)


def encode_filtered(data: Buffer, width: int, height: int, mode: str, level: int) -> bytes:
    """As `encode`, for image data whose rows are each already the filter type 0 then the
    pixels."""
    channels, colour_type = _COLOUR_TYPES[mode]
    length = memoryview(data).nbytes
    if length != height * (1 + width * channels):
        raise ValueError(f"{length} bytes for {width}x{height} {mode} rows")
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", _deflate(data, level)), _IEND)
    )


def _deflate(data: Buffer, level: int) -> bytes:
    """A zlib stream of data (RFC 1950), as PNG's IDAT holds."""
    if level in _ISAL_LEVELS:
        return isal_zlib.compress(data, level)
    return zlib.compress(data, level)


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(kind))
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
