"""`type: wms` layers: one GetMap per metatile (buffer included) to an upstream WMS,
the answer cut into tiles in the render processes, handed to a free one as it is read
(`ImageCutter.cut_as_read`), else once whole; GetFeatureInfo forwarded.

aiohttp is this adapter's client; its errors become `UpstreamError` here, with the
HTTP status the server answers: 502 (a wrong answer), 503 (unreachable), 504 (timeout).
Nothing a WMS answers is stored unless it decoded as an image of the expected size.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Protocol, TypeVar, runtime_checkable

import aiohttp
from yarl import URL

from tileserver.adapters.aiohttp_quirks import absorb_orphaned_writes
from tileserver.config import Layer, UpstreamConfig, WmsSource
from tileserver.errors import RenderError, UpstreamError
from tileserver.grid import Metatile
from tileserver.types import TileCoord
from tileserver.wms import error_message, featureinfo_params, getmap_params, is_service_exception

log = logging.getLogger("tileserver.upstream")

T = TypeVar("T")

MAX_BODY = 64 * 1024 * 1024  # bytes; a 2112x2112 RGBA metatile is 18 MB uncompressed
# Seconds a render process is fed an answer as it is read. An answer still coming after
# that is taken back: the process is freed for other jobs (a WMS that trickles its answer
# must not hold the processes that Mapnik layers render in), and the answer is cut once
# whole. MapServer sends a metatile's answer in tens of milliseconds.
FEED_FOR = 1.0


class ImageCutter(Protocol):
    async def cut(
        self,
        layer: Layer,
        metatile: Metatile,
        image: bytes,
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        """Raises InvalidImage (a ValueError) when image is not the metatile's image."""
        ...


@runtime_checkable
class FeedCutter(Protocol):
    """An ImageCutter that may also take the image as it is read (the render pool)."""

    def cut_as_read(
        self,
        layer: Layer,
        metatile: Metatile,
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> FedCut | None:
        """As `cut`, fed the image as it is read; None: `cut` it once read."""
        ...


class FedCut(Protocol):
    """A cut job fed the image as it is read."""

    def write(self, data: bytes) -> None: ...

    async def tiles(self) -> dict[TileCoord, bytes]:
        """Once every piece is written: as `ImageCutter.cut`."""
        ...

    def abort(self) -> None: ...


class WmsRenderer:
    """Renders the metatiles of `type: wms` layers; one instance per server process."""

    def __init__(self, cutter: ImageCutter, upstream: UpstreamConfig | None = None) -> None:
        self._cutter = cutter
        self._upstream = upstream or UpstreamConfig()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        absorb_orphaned_writes()
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self._upstream.connections_per_host, ttl_dns_cache=300
        )
        # The session's own timeouts are off: each request has the layer's `timeout`.
        # trust_env: HTTP_PROXY / HTTPS_PROXY / NO_PROXY apply, as they do to
        # TileCloud-chain's WMS requests (requests' default).
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            raise_for_status=False,
            trust_env=True,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def render(
        self,
        layer: Layer,
        metatile: Metatile,
        dimensions: Mapping[str, str],
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        source = _source(layer)
        params = getmap_params(
            source, layer.grid, metatile.bbox, metatile.width, metatile.height, layer.mime_type
        )
        params.extend((name.upper(), value) for name, value in sorted(dimensions.items()))
        url = URL(source.url).extend_query(params)

        feeder = self._cutter if isinstance(self._cutter, FeedCutter) else None

        def fed() -> FedCut | None:
            if feeder is None:
                return None
            return feeder.cut_as_read(layer, metatile, only, first, on_first)

        async def attempt() -> dict[TileCoord, bytes]:
            body, _, cutting = await self._once(source, url, "GetMap", fed)
            try:
                if cutting is not None:
                    return await cutting.tiles()
                return await self._cutter.cut(layer, metatile, body, only, first, on_first)
            except ValueError as exc:  # InvalidImage: a broken answer, worth a retry
                raise UpstreamError(
                    f"WMS {_where(source)} GetMap answered {exc}", 502,
                    "answered something that is not a readable image of the size asked for",
                ) from exc  # fmt: skip

        return await self._with_retries(source, attempt)

    async def feature_info(
        self, layer: Layer, coord: TileCoord, i: int, j: int, info_format: str
    ) -> tuple[bytes, str]:
        """The WMS's GetFeatureInfo answer for pixel (i, j) of a tile, and its type."""
        source = _source(layer)
        grid = layer.grid
        params = featureinfo_params(
            source, grid, grid.tile_bbox(coord), grid.tile_size, i, j, info_format
        )
        url = URL(source.url).extend_query(params)
        body, content_type, _ = await self._with_retries(
            source, lambda: self._once(source, url, "GetFeatureInfo")
        )
        return body, content_type

    async def _with_retries(self, source: WmsSource, attempt: Callable[[], Awaitable[T]]) -> T:
        attempts = source.retries + 1
        for number in range(1, attempts + 1):
            try:
                return await attempt()
            except UpstreamError as exc:
                if number == attempts:
                    log.error("%s (after %d attempt(s))", exc, attempts)
                    raise
                delay = self._upstream.retry_backoff * 2 ** (number - 1)
                log.warning("%s; retry %d/%d in %.1f s", exc, number, source.retries, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _once(
        self,
        source: WmsSource,
        url: URL,
        operation: str,
        fed: Callable[[], FedCut | None] | None = None,
    ) -> tuple[bytes, str, FedCut | None]:
        """The answer's body and type; an image is handed to the cut job `fed` gives, if
        any, as it is read (then the body is b"")."""
        session = self._session
        if session is None:
            raise RenderError("the WMS client is closed")
        where = f"WMS {_where(source)} {operation}"
        headers = dict(source.headers)
        cutting: FedCut | None = None
        try:
            try:
                async with asyncio.timeout(source.timeout):
                    async with session.get(url, headers=headers, allow_redirects=True) as response:
                        status = response.status
                        content_type = response.headers.get("Content-Type", "")
                        if fed and status == 200 and content_type.lower().startswith("image/"):
                            cutting = fed()
                        body, cutting = await _read(response, cutting)
            except BaseException:
                if cutting is not None:
                    cutting.abort()  # nothing is cut from an answer that broke off
                raise
        except TimeoutError as exc:
            late = f"gave no answer within {source.timeout:g} s"
            raise UpstreamError(f"{where}: no answer within {source.timeout:g} s", 504,
                                late) from exc  # fmt: skip
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(f"{where}: cannot connect ({exc.os_error})", 503,
                                "cannot be reached") from exc  # fmt: skip
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError(f"{where}: broken answer ({type(exc).__name__}: {exc})", 502,
                                "sent a broken answer") from exc  # fmt: skip
        if status != 200:
            raise UpstreamError(f"{where}: HTTP {status}: {error_message(content_type, body)}",
                                502, f"answered HTTP {status}")  # fmt: skip
        if is_service_exception(content_type, body):
            raise UpstreamError(
                f"{where}: ServiceException: {error_message(content_type, body)}", 502,
                "answered a ServiceException",
            )  # fmt: skip
        if operation == "GetMap" and not content_type.lower().startswith("image/"):
            raise UpstreamError(
                f"{where}: answered {content_type or 'no Content-Type'} instead of an image: "
                f"{error_message(content_type, body)}", 502, "answered something but an image",
            )  # fmt: skip
        return body, content_type, cutting


async def _read(
    response: aiohttp.ClientResponse, cutting: FedCut | None = None
) -> tuple[bytes, FedCut | None]:
    """The body, and `cutting` when it was handed the whole body as it came (the body is
    then b""). A body still coming FEED_FOR seconds after the headers is no longer handed
    over: `cutting` is aborted and None comes back with the whole body, to cut once read."""
    length = response.content_length
    if length is not None and length > MAX_BODY:
        raise ValueError(f"{length} bytes is more than the {MAX_BODY} accepted")
    feeding = cutting

    def take_back() -> None:
        nonlocal feeding
        if feeding is not None:
            feeding.abort()
            feeding = None

    timer = None if cutting is None else asyncio.get_running_loop().call_later(FEED_FOR, take_back)
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in response.content.iter_any():
            total += len(chunk)
            if total > MAX_BODY:
                raise ValueError(f"more than the {MAX_BODY} bytes accepted")
            chunks.append(chunk)
            if feeding is not None:
                feeding.write(chunk)
    finally:
        if timer is not None:
            timer.cancel()
    if length is not None and total != length:
        raise ValueError(f"{total} bytes of the {length} announced")
    if feeding is not None:
        return b"", feeding
    return b"".join(chunks), None


def _source(layer: Layer) -> WmsSource:
    if layer.wms is None:
        raise RenderError(f"layer {layer.name!r} is not a WMS layer")
    return layer.wms


def _where(source: WmsSource) -> str:
    url = URL(source.url)
    return str(url.with_query(None).with_user(None))
