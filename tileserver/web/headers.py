"""Headers every answer shares: CORS, and the HTTP caching of tiles (Expires, ETag,
If-None-Match)."""

from __future__ import annotations

import time
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


def etag_matches(if_none_match: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates
