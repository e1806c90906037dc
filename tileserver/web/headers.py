"""Headers every answer shares: CORS, and the HTTP caching of tiles (Expires, ETag,
If-None-Match)."""

from __future__ import annotations

import time
import zlib
from email.utils import formatdate

CORS = {"Access-Control-Allow-Origin": "*"}


_EXPIRES: dict[int, tuple[int, str]] = {}  # ttl -> (second, its Expires date)


def expires_header(ttl: int) -> str:
    """The Expires header of a tile served now, formatted once per second and TTL."""
    now = int(time.time())
    cached = _EXPIRES.get(ttl)
    if cached is not None and cached[0] == now:
        return cached[1]
    text = formatdate(now + ttl, usegmt=True)
    if len(_EXPIRES) > 64:
        _EXPIRES.clear()
    _EXPIRES[ttl] = (now, text)
    return text


def etag_of(data: bytes) -> str:
    """A validator of the tile's bytes, the same in every process: its length, CRC-32 and
    Adler-32 (together a 64-bit check, compared only with earlier versions of the same
    tile; a fifth of blake2b's cost per hit)."""
    return f'"{len(data):x}-{zlib.crc32(data):08x}{zlib.adler32(data):08x}"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates
