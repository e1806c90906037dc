"""Headers every answer shares: CORS, and the HTTP caching of tiles (Expires, ETag,
Last-Modified, and the conditional requests If-None-Match and If-Modified-Since)."""

from __future__ import annotations

import time
from email.utils import formatdate

from aiohttp import web

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


_DATES: dict[int, str] = {}  # Unix second -> its HTTP date (a metatile's tiles share one)


def http_date(second: int) -> str:
    """The IMF-fixdate of a Unix second (RFC 9110, 5.6.7), formatted once per second."""
    text = _DATES.get(second)
    if text is None:
        if len(_DATES) > 256:
            _DATES.clear()
        text = _DATES[second] = formatdate(second, usegmt=True)
    return text


def last_modified(modified: float | None, now: float) -> int | None:
    """A tile's Last-Modified as a whole Unix second (the header's precision); never after
    `now` (RFC 9110, 8.8.2.1: a store's clock ahead of ours); None when unknown."""
    if modified is None:
        return None
    return int(min(modified, now))


def not_modified(request: web.BaseRequest, etag: str, modified: int | None, now: float) -> bool:
    """True when a conditional GET or HEAD of a tile (a 200) is answered 304 (RFC 9110,
    13.1.2, 13.1.3, 13.2.2): by If-None-Match when the request has one, else by
    If-Modified-Since against the tile's Last-Modified (`modified`, whole seconds). A date
    that does not parse, or that is in the future, is ignored, as is the header on a tile
    whose time is unknown."""
    if "If-None-Match" in request.headers:
        # Several If-None-Match lines are one comma-separated list (RFC 9110, 5.3).
        return etag_matches(",".join(request.headers.getall("If-None-Match")), etag)
    if modified is None or request.method not in ("GET", "HEAD"):
        return False
    since = request.if_modified_since  # None when absent or not an HTTP date
    if since is None:
        return False
    second = since.timestamp()
    return second <= now and modified <= second
