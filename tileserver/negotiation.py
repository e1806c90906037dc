"""Content negotiation of OGC API resources: the `f` query parameter, else `Accept`.

Pure functions. `f` wins over `Accept` (OGC API - Common, 8.4). A representation the
server knows but does not offer for a resource is `406 Not Acceptable`; an `f` value it
does not know at all is an invalid parameter (`400`).
"""

from __future__ import annotations

from collections.abc import Mapping

from tileserver.errors import OWSException

# Every `f` value the server understands, and its media type.
KNOWN_F = {
    "json": "application/json",
    "html": "text/html",
    "xml": "application/xml",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "tilejson": "application/vnd.mapbox.tilejson+json",
}


def not_acceptable(text: str) -> OWSException:
    return OWSException("NotAcceptable", text, "f", status=406)


def _ranges(accept: str) -> list[tuple[str, float]]:
    """(media range, q) of an Accept header; malformed q values count as 1."""
    ranges = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        q = 1.0
        for parameter in fields[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value)))
                except ValueError:
                    q = 1.0
        ranges.append((media, q))
    return ranges


def _quality(media_type: str, ranges: list[tuple[str, float]]) -> float:
    """The q of the most specific range matching media_type (RFC 9110, 12.5.1)."""
    kind = media_type.split("/")[0]
    best: tuple[int, float] | None = None
    for media, q in ranges:
        if media == media_type:
            specificity = 2
        elif media == f"{kind}/*":
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    return 0.0 if best is None else best[1]


def negotiate(f: str | None, accept: str | None, offered: Mapping[str, str]) -> str:
    """The media type to answer with, from `offered` (f name -> media type, the server's
    preference first); OWSException 400 for an unknown `f`, 406 when nothing fits."""
    if f is not None:
        name = f.lower()
        if name in offered:
            return offered[name]
        if name in KNOWN_F:
            raise not_acceptable(
                f"f={f!r} is not available for this resource: use one of {sorted(offered)}"
            )
        raise OWSException(
            "InvalidParameterValue",
            f"Unknown value of f: {f[:40]!r}: use one of {sorted(offered)}",
            "f",
        )
    if not accept or not accept.strip():
        return next(iter(offered.values()))
    ranges = _ranges(accept)
    best_type, best_q = "", 0.0
    for media_type in offered.values():
        q = _quality(media_type, ranges)
        if q > best_q:
            best_type, best_q = media_type, q
    if best_q <= 0:
        raise not_acceptable(
            f"None of {sorted(set(offered.values()))} is acceptable (Accept: {accept[:100]})"
        )
    return best_type
