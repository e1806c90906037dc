"""PMTiles archives (https://github.com/protomaps/PMTiles, version 3), over the `pmtiles`
package: a read-only TileStore, from a file or over HTTP range requests (S3, a CDN),
and the writer behind `generate_controller --export-pmtiles`.

An archive holds one tileset addressed by Web Mercator z/x/y (rows from the top), so
the store serves the one layer it is `bound` to (the layer whose `cache` it is), on a
Web Mercator grid. `open` reads the header and the root directory (one request: both
lie in the first 16 KiB); leaf directories are read when first needed and kept, so a
tile costs one range request once its directory is known. A replaced archive is read
again on reload (SIGHUP). Failures are `StoreUnavailable`; `StoreOutage` when the
archive cannot be reached or is not a PMTiles archive.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
from pmtiles.tile import (
    Compression,
    Entry,
    TileType,
    deserialize_directory,
    deserialize_header,
    find_tile,
    tileid_to_zxy,
    zxy_to_tileid,
)
from pmtiles.writer import Writer

from tileserver.errors import StoreOutage, StoreUnavailable
from tileserver.grid import web_mercator_zoom_offset
from tileserver.store_layout import (
    Tileset,
    check_path,
    check_prefix,
    parse_tile_path,
    tile_prefix,
)
from tileserver.types import StoredTile

_FIRST_READ = 16384  # the header and the root directory (PMTiles 3: within the first 16 KiB)
_LEAVES_KEPT = 256  # leaf directories kept in memory
TILE_TYPES = {"png": TileType.PNG, "jpeg": TileType.JPEG, "jpg": TileType.JPEG,
              "webp": TileType.WEBP, "avif": TileType.AVIF, "pbf": TileType.MVT}  # fmt: skip


def tile_order(z: int, x: int, y: int) -> int:
    """The archive's order of a Web Mercator tile (its Hilbert tile id)."""
    return int(zxy_to_tileid(z, x, y))


class PMTilesStore:
    """The tiles of one PMTiles archive: a file path, or an http(s):// URL."""

    def __init__(self, source: str, bound: Tileset | None, *, timeout: float = 5.0) -> None:
        self.source = source
        self.bound = bound
        self.timeout = timeout
        self._http = source.startswith(("http://", "https://"))
        self._session: aiohttp.ClientSession | None = None
        self._header: dict[str, Any] | None = None
        self._root: list[Entry] = []
        self._leaves: OrderedDict[tuple[int, int], list[Entry]] = OrderedDict()
        self._file: Any = None
        self._http_modified: float | None = None  # the latest Last-Modified of the archive

    def __repr__(self) -> str:
        return f"PMTilesStore({self.source!r})"

    # --- reading bytes -------------------------------------------------------------------

    async def _read(self, offset: int, length: int) -> StoredTile:
        """The bytes, and when the archive was last written: the file's mtime (taken after
        the read), the range answer's Last-Modified (None without one)."""
        if not self._http:
            return await asyncio.to_thread(self._pread, offset, length)
        if length == 0:  # an empty tile: dated by the answer that gave its directory
            return StoredTile(b"", self._http_modified)
        assert self._session is not None
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        async with self._session.get(self.source, headers=headers) as response:
            if response.status not in (200, 206):
                raise StoreUnavailable(f"{self.source}: HTTP {response.status} for a range")
            data = await response.read()
            modified = _http_time(response.headers.get("Last-Modified"))
        if response.status == 200:  # a server that ignores ranges sends the whole archive
            data = data[offset : offset + length]
        if modified is not None:
            self._http_modified = max(modified, self._http_modified or modified)
        return StoredTile(data, modified)

    def _pread(self, offset: int, length: int) -> StoredTile:
        fd = self._file.fileno()
        data = os.pread(fd, length, offset) if length else b""
        return StoredTile(data, os.fstat(fd).st_mtime)

    async def _guarded(self, what: str, offset: int, length: int) -> bytes:
        return (await self._guarded_stored(what, offset, length)).data

    async def _guarded_stored(self, what: str, offset: int, length: int) -> StoredTile:
        try:
            return await self._read(offset, length)
        except StoreUnavailable:
            raise
        except TimeoutError as exc:
            raise StoreOutage(f"{self.source}: {what}: no answer in {self.timeout:g} s") from exc
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise StoreOutage(f"{self.source}: {what}: {exc or type(exc).__name__}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(f"{self.source}: {what}: {exc or type(exc).__name__}") from exc

    async def open(self) -> None:
        if self._header is not None:
            return
        try:
            if self._http:
                timeout = aiohttp.ClientTimeout(total=self.timeout)
                self._session = aiohttp.ClientSession(timeout=timeout)
            else:
                self._file = await asyncio.to_thread(open, self.source, "rb")
        except OSError as exc:
            raise StoreOutage(f"{self.source}: {exc.strerror or exc}") from exc
        try:
            first = await self._guarded("header", 0, _FIRST_READ)
            try:
                header: dict[str, Any] = dict(deserialize_header(first[:127]))
            except Exception as exc:  # the package raises its own, and struct/index errors
                raise StoreOutage(f"{self.source}: not a PMTiles 3 archive ({exc!r})") from exc
            offset, length = header["root_offset"], header["root_length"]
            if offset + length <= len(first):
                root = first[offset : offset + length]
            else:
                root = await self._guarded("root directory", offset, length)
            self._root = deserialize_directory(root)
            self._header = header
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        file, self._file = self._file, None
        if file is not None:
            file.close()
        self._header = None
        self._http_modified = None
        self._leaves.clear()

    # --- tiles ------------------------------------------------------------------------

    def _tile_id(self, path: str) -> int | None:
        parsed = parse_tile_path("", check_path(path))
        bound = self.bound
        if parsed is None or bound is None or parsed.extension != bound.extension:
            return None
        prefix = tile_prefix(
            "", parsed.layer_name, parsed.style, parsed.dimension_values, parsed.matrix_set
        ).rstrip("/")
        z = bound.grid.zoom_of(parsed.matrix_id)
        offset = web_mercator_zoom_offset(bound.grid)
        if prefix != bound.prefix or z is None or offset is None:
            return None
        zoom = z + offset
        if parsed.row >= 1 << zoom or parsed.col >= 1 << zoom:
            return None
        return tile_order(zoom, parsed.col, parsed.row)

    async def _directory(self, offset: int, length: int) -> list[Entry]:
        key = (offset, length)
        entries = self._leaves.get(key)
        if entries is None:
            assert self._header is not None
            data = await self._guarded("directory", self._header["leaf_directory_offset"] + offset,
                                       length)  # fmt: skip
            entries = deserialize_directory(data)
            self._leaves[key] = entries
            while len(self._leaves) > _LEAVES_KEPT:
                self._leaves.popitem(last=False)
        self._leaves.move_to_end(key)
        return entries

    async def _find(self, tile_id: int) -> Entry | None:
        if self._header is None:
            raise RuntimeError(f"{self!r} used before open() or after close()")
        entries = self._root
        for _ in range(4):  # the format's maximal depth
            entry = find_tile(entries, tile_id)
            if entry is None or entry.run_length > 0:
                return entry
            entries = await self._directory(entry.offset, entry.length)
        return None

    async def get(self, path: str) -> bytes | None:
        stored = await self.get_stored(path)
        return None if stored is None else stored.data

    async def get_stored(self, path: str) -> StoredTile | None:
        tile_id = self._tile_id(path)
        if tile_id is None:
            return None
        entry = await self._find(tile_id)
        if entry is None:
            return None
        assert self._header is not None
        stored = await self._guarded_stored(
            "read", self._header["tile_data_offset"] + entry.offset, entry.length
        )
        if self._header["tile_compression"] == Compression.GZIP:
            return StoredTile(gzip.decompress(stored.data), stored.modified)
        return stored

    async def exists(self, path: str) -> bool:
        tile_id = self._tile_id(path)
        return tile_id is not None and await self._find(tile_id) is not None

    async def list_paths(self, prefix: str) -> AsyncIterator[str]:
        check_prefix(prefix)
        bound = self.bound
        if bound is None or not (bound.prefix + "/").startswith(prefix[: len(bound.prefix) + 1]):
            return
        offset = web_mercator_zoom_offset(bound.grid)
        assert offset is not None and self._header is not None
        async for tile_id in self._tile_ids(self._root):
            zoom, x, y = tileid_to_zxy(tile_id)
            if 0 <= zoom - offset < len(bound.grid.resolutions):
                path = bound.path(zoom - offset, y, x)
                if path.startswith(prefix):
                    yield path

    async def _tile_ids(self, entries: list[Entry]) -> AsyncIterator[int]:
        for entry in entries:
            if entry.run_length > 0:
                for i in range(entry.run_length):
                    yield entry.tile_id + i
            else:
                async for tile_id in self._tile_ids(
                    await self._directory(entry.offset, entry.length)
                ):
                    yield tile_id

    async def put_many(self, items: Mapping[str, bytes], content_type: str) -> None:
        for path in items:
            check_path(path)
        raise StoreOutage(  # every write would fail alike: generate_tiles stops at once
            f"{self.source}: a pmtiles cache is read-only: write the tiles into a folder, S3, "
            "MBTiles or GeoPackage cache, then generate_controller --export-pmtiles"
        )

    async def delete_many(self, paths: Iterable[str]) -> None:
        for path in paths:
            check_path(path)
        raise StoreOutage(f"{self.source}: a pmtiles cache is read-only")


class PMTilesWriter:
    """Writes an archive: `add` the tiles in `tile_order`, then `finish`; the archive
    appears at `target` whole (a temporary file renamed), or not at all."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self._temporary = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by finish/abort)
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        )
        self._writer = Writer(self._temporary)
        self.min_zoom: int | None = None
        self.max_zoom: int | None = None

    def add(self, z: int, x: int, y: int, data: bytes) -> None:
        self._writer.write_tile(tile_order(z, x, y), data)
        self.min_zoom = z if self.min_zoom is None else min(self.min_zoom, z)
        self.max_zoom = z if self.max_zoom is None else max(self.max_zoom, z)

    def finish(self, extension: str, bounds: tuple[float, float, float, float],
               metadata: dict[str, Any]) -> None:  # fmt: skip
        if self.min_zoom is None or self.max_zoom is None:
            raise ValueError("no tile to write")
        west, south, east, north = bounds
        header = {
            "tile_type": TILE_TYPES.get(extension.lower(), TileType.UNKNOWN),
            "tile_compression": Compression.NONE,
            "min_lon_e7": round(west * 1e7),
            "min_lat_e7": round(south * 1e7),
            "max_lon_e7": round(east * 1e7),
            "max_lat_e7": round(north * 1e7),
            "center_zoom": self.min_zoom,
            "center_lon_e7": round((west + east) / 2 * 1e7),
            "center_lat_e7": round((south + north) / 2 * 1e7),
        }
        self._writer.finalize(header, metadata)
        self._temporary.flush()
        os.fsync(self._temporary.fileno())
        self._temporary.close()
        os.replace(self._temporary.name, self.target)

    def abort(self) -> None:
        self._temporary.close()
        Path(self._temporary.name).unlink(missing_ok=True)


def _http_time(value: str | None) -> float | None:
    """The Unix time of a Last-Modified date; None when absent or not a date. Never after
    now: bytes read now were written before (a server may round up, or its clock lead)."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # HTTP dates are GMT: one without a zone is too (not the server's local time).
    return min((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp(), time.time())


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata of an archive file (for checks and tests)."""
    with path.open("rb") as archive:
        header = deserialize_header(archive.read(127))
        archive.seek(header["metadata_offset"])
        data = archive.read(header["metadata_length"])
    if header["internal_compression"] == Compression.GZIP:
        data = gzip.decompress(data)
    found: dict[str, Any] = json.loads(data)
    return found
