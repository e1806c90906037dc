"""How fresh a cached tile is, and the HTTP caching headers that say so truthfully.

A tile rendered at `stamp` (Unix seconds) is fresh for its layer's expiry (`ttl_seconds`).
Past it, RFC 5861's windows, when the layer opts in: within `stale_while_revalidate`
seconds it is answered at once while a background render refreshes it; within
`stale_if_error` seconds it is answered only when its render fails. Beyond both it is
gone, as an expired tile always was.
"""

from __future__ import annotations

import zlib
from enum import Enum

from tileserver.config import Layer


class Staleness(Enum):
    FRESH = "fresh"
    REVALIDATE = "stale-while-revalidate"  # answer it, refresh in the background
    IF_ERROR = "stale-if-error"  # render again; answer it if the render fails
    EXPIRED = "expired"  # a miss


def staleness(layer: Layer, stamp: int, now: float) -> Staleness:
    """Where a tile rendered at `stamp` stands at `now` (both Unix times). An unknown
    stamp (0: written by an older version, whose TTL was the expiry) counts as fresh."""
    if stamp <= 0:
        return Staleness.FRESH
    age = now - stamp
    ttl = layer.ttl_seconds
    if age < ttl:
        return Staleness.FRESH
    if age < ttl + layer.stale_while_revalidate:
        return Staleness.REVALIDATE
    if age < ttl + layer.stale_if_error:
        return Staleness.IF_ERROR
    return Staleness.EXPIRED


def fresh_for(layer: Layer, rendered_at: float | None, now: float) -> float:
    """Seconds a tile rendered at `rendered_at` stays fresh from `now` (the full expiry when
    that time is unknown, 0 once stale)."""
    if rendered_at is None:
        return float(layer.ttl_seconds)
    return max(0.0, rendered_at + layer.ttl_seconds - now)


def cache_control(layer: Layer, rendered_at: float | None, now: float) -> tuple[str, int]:
    """The Cache-Control of a tile answered at `now`, and its max-age (for Expires).

    Without stale windows: `public, max-age=<expiry>`, as always. With them, max-age is
    what is left of the tile's freshness (0 for a stale tile: no promise of freshness it
    does not have), followed by the RFC 5861 directives for what is left of each window.
    """
    ttl = layer.ttl_seconds
    swr, sie = layer.stale_while_revalidate, layer.stale_if_error
    if not swr and not sie:
        return f"public, max-age={ttl}", ttl
    age = 0.0 if rendered_at is None else max(0.0, now - rendered_at)
    max_age = max(0, int(ttl - age))
    past = max(0.0, age - ttl)  # seconds the tile has been stale
    directives = [f"public, max-age={max_age}"]
    if swr:
        directives.append(f"stale-while-revalidate={max(0, int(swr - past))}")
    if sie:
        directives.append(f"stale-if-error={max(0, int(sie - past))}")
    return ", ".join(directives), max_age


def etag_of(data: bytes) -> str:
    """A validator of the tile's bytes, the same in every process: its length, CRC-32 and
    Adler-32 (together a 64-bit check, compared only with earlier versions of the same
    tile; a fifth of blake2b's cost). Computed once per tile where a cache keeps it."""
    return f'"{len(data):x}-{zlib.crc32(data):08x}{zlib.adler32(data):08x}"'
