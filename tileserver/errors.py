"""The package's exceptions: one root, one subclass per kind of failure."""

from __future__ import annotations

from collections.abc import Sequence


class TileServerError(Exception):
    """Root of every error tileserver raises on purpose."""


class ConfigError(TileServerError):
    """The configuration is invalid; each message names the YAML path at fault."""

    def __init__(self, messages: Sequence[str]) -> None:
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


class CacheUnavailable(TileServerError):
    """A tile cache (Memcached...) could not be reached or answered wrongly."""


class CacheTimeout(CacheUnavailable):
    """A tile cache did not answer in time: it may hang, or only be slow under load (a
    `ResilientCache` tells them apart by whether other commands succeeded meanwhile)."""


class StoreUnavailable(TileServerError):
    """A tile store (folder, S3...) could not be reached or answered wrongly."""


class StoreOutage(StoreUnavailable):
    """The whole tile store fails, not one tile's path: its file system is full, read-only
    or over quota, or its S3 endpoint cannot be reached or refuses the bucket. The next
    write would fail alike, so `generate_tiles` stops (resumable) instead of failing every
    metatile in turn."""


class RenderError(TileServerError):
    """A renderer failed to produce a metatile."""


class DatabaseUnavailable(RenderError):
    """A layer's database (PostGIS) cannot be reached; the message names it, so it goes
    to the log, never to a client."""


class UpstreamError(RenderError):
    """An upstream service (a WMS) failed; `status` is what the HTTP face answers:
    502 for a wrong answer (a ServiceException, an HTML page, a broken image), 503 when
    it cannot be reached, 504 when it did not answer in time. `public` says what went
    wrong without the upstream's address or words (its messages may name its database):
    what a client may be told."""

    def __init__(self, message: str, status: int = 502, public: str = "") -> None:
        self.status = status
        self.public = public
        super().__init__(message)


class QueueUnavailable(TileServerError):
    """The job queue of distributed generation (Redis, SQS) or its SNS topic could not be
    reached, refused a request or does not exist; the message names it."""


class GeomsError(TileServerError):
    """A layer's `geoms` could not be read at generation time (a file that is not a
    geometry, a database that does not answer, a query that fails); the message starts
    with the entry's YAML path, e.g. `layers.osm.geoms[0]`."""


class PlanningError(TileServerError):
    """A generation cannot be planned: a setting it needs is missing (no layer named, a
    layer without a tile store or pre-generated levels); `generate_tiles` exits with 1."""


class InvalidSelection(PlanningError):
    """A value of what a generation was asked to cover is wrong: an unknown layer or
    cache, a zoom that does not parse, a bbox or geometry outside the layer, an unreadable
    --geom or --tiles file; `generate_tiles` exits with 2, as for a wrong option."""


class OWSException(TileServerError):
    """An OGC OWS 1.1 exception, answered to the client as an ExceptionReport.

    `status` is the HTTP status of the report (WMTS 1.0.0, table 28).
    """

    def __init__(self, code: str, text: str, locator: str | None = None, status: int = 400) -> None:
        self.code = code
        self.text = text
        self.locator = locator
        self.status = status
        super().__init__(f"{code}: {text}")


def missing_parameter(name: str) -> OWSException:
    return OWSException("MissingParameterValue", f"Missing parameter: {name}", name.lower())


def invalid_parameter(name: str, text: str) -> OWSException:
    return OWSException("InvalidParameterValue", text, name.lower())


def tile_out_of_range(name: str, text: str) -> OWSException:
    return OWSException("TileOutOfRange", text, name.lower())


def operation_not_supported(operation: str) -> OWSException:
    return OWSException(
        "OperationNotSupported",
        f"Operation not supported: {operation}",
        "request",
        status=501,
    )


def not_found(text: str) -> OWSException:
    return OWSException("NotFound", text, None, status=404)
