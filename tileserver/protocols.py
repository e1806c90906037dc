"""The small interfaces services depend on; adapters implement them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from tileserver.config import Layer
from tileserver.grid import Metatile
from tileserver.jobs import Delivery, FailedJob, QueueCounts
from tileserver.types import CacheEntry, StoredTile, TileCoord


class TileCache(Protocol):
    """A key/value tile cache with expiry (Memcached, or the embedded LRU).

    Each value carries a stamp: the Unix time, in whole seconds, it was made (a tile: when
    its metatile was rendered), 0 when unknown. It tells a fresh tile from a stale one
    (`stale_while_revalidate`) and dates it for HTTP (`Age`, `Last-Modified`); Memcached
    keeps it in the item's 32-bit flags, so the value stays the tile's bytes alone.

    Every method may raise `CacheUnavailable`; none raises anything else on purpose.
    """

    name: str

    async def get_many(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """The entries found, by key; missing keys are absent from the result."""
        ...

    async def set_many(self, items: Mapping[str, bytes], ttl: int, stamp: int = 0) -> None:
        """Stores every item with a TTL in seconds and the stamp, in as few round trips as
        possible."""
        ...

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Stores only when the key is absent; True when stored (a lock was taken)."""
        ...

    async def delete(self, key: str) -> None: ...

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Deletes every key, in as few round trips as possible; how many of them were
        there (missing keys are fine)."""
        ...

    async def close(self) -> None: ...


class SharedCache(TileCache, Protocol):
    """A tile cache shared by every server process (Memcached, Redis): `generate_tiles
    --update` and the server's start-up ask which of its servers answer."""

    @property
    def addresses(self) -> list[str]:
        """'host:port' of every server."""
        ...

    async def ping(self) -> list[str]:
        """The addresses of the servers that answer."""
        ...


class HotTiles(Protocol):
    """An in-process tier of recently served tiles, read without awaiting."""

    def get(self, key: str) -> CacheEntry | None: ...

    def held(self, key: str) -> tuple[CacheEntry, float] | None:
        """The live entry of key and the seconds it has left."""
        ...

    def put(self, key: str, value: bytes, ttl: float, stamp: int = 0, etag: str = "") -> None: ...

    def discard(self, key: str) -> None: ...


class ReleaseNotices(Protocol):
    """Render locks' releases told to the processes waiting for them (`render_lock`):
    hints that wake a waiter early, never what it relies on."""

    owner: str  # the owner written in the locks taken; the holder waiters ask to tell

    def held(self, key: str) -> None: ...

    def released(self, key: str) -> None:
        """Called once key's lock is released (its tiles written, or its render failed)."""
        ...

    def watch(self, key: str, holder: str) -> asyncio.Future[None]:
        """A future done at key's next release; `holder`: the owner in the lock's value."""
        ...

    def unwatch(self, key: str, future: asyncio.Future[None]) -> None: ...


class Renderer(Protocol):
    """Renders a metatile and cuts it into encoded tiles."""

    async def render(
        self,
        layer: Layer,
        metatile: Metatile,
        dimensions: Mapping[str, str],
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        """The metatile's tiles, encoded; only those of `only` when given (generation
        writes a few tiles of the metatiles at a bbox's edge: the others are not encoded).

        Answer first: with `first` (one of them) and `on_first`, that tile is encoded
        before the others and may be handed to `on_first` as soon as it is, in the event
        loop, before `render` returns (with every tile, that one included)."""
        ...

    async def close(self) -> None: ...


class FeatureInfoSource(Protocol):
    """Answers GetFeatureInfo for a pixel of a tile (a WMS layer's upstream)."""

    async def feature_info(
        self, layer: Layer, coord: TileCoord, i: int, j: int, info_format: str
    ) -> tuple[bytes, str]:
        """The answer's bytes and content type; OWSException for a layer not queryable."""
        ...


class RenderPool(Renderer, FeatureInfoSource, Protocol):
    """The renderer of a configuration's layers, with processes to start and to check."""

    async def start(self) -> None:
        """Starts the processes; ConfigError when a Mapnik file does not load."""
        ...

    async def check(self) -> tuple[str | None, dict[str, str]]:
        """Readiness: (what is wrong with the pool, None when it answers; the layers
        whose database is unavailable, with why)."""
        ...


class TileStore(Protocol):
    """Pre-generated tiles by path (see `store_layout.tile_path`), relative to the store's root.

    Every method may raise `StoreUnavailable`; a path that would leave the root raises
    `ValueError` (a programming error, never an outage). `open` before any other call.
    """

    async def open(self) -> None: ...

    async def get(self, path: str) -> bytes | None:
        """The tile's bytes, None when there is no tile at that path."""
        ...

    async def get_stored(self, path: str) -> StoredTile | None:
        """The tile's bytes and the Unix time they were stored, read in the same round
        trip as `get`; None when there is no tile at that path. The time may be later than
        the tile's own write (a file's mtime for a whole database), never earlier: it is
        the tile's `Last-Modified`, and a client must not miss a change."""
        ...

    async def put_many(self, items: Mapping[str, bytes], content_type: str) -> None:
        """Writes every tile, concurrently; a reader sees either the old or the new bytes."""
        ...

    async def delete_many(self, paths: Iterable[str]) -> None:
        """Deletes the tiles; paths without a tile are fine."""
        ...

    async def exists(self, path: str) -> bool: ...

    def list_paths(self, prefix: str) -> AsyncIterator[str]:
        """The path of every tile that starts with `prefix` (a plain string prefix, as in
        S3), in no particular order."""
        ...

    async def close(self) -> None: ...


class JobQueue(Protocol):
    """The queue of distributed generation (`generate_tiles --role master/worker`): at-least-
    once delivery of job messages (`tileserver.jobs`) to many workers.

    A received job is hidden from the other workers for `lease` seconds; `extend` renews
    that while the job runs. A job neither acknowledged nor failed in time (its worker
    died) is delivered again. Every method may raise `QueueUnavailable`; `open` before any
    other call.
    """

    name: str  # for messages: "redis://host:6379 stream tileserver-jobs", "SQS queue tiles"
    lease: float  # seconds a received job stays with its worker without `extend`
    max_tries: int  # failed deliveries of a job before `fail` puts it in the error list
    counts_delay: float  # seconds `counts` may lag behind (SQS's are approximate)

    async def open(self, create: bool = False) -> None:
        """Connects; with `create`, makes the queue (and its error list) when missing."""
        ...

    async def put(self, messages: Sequence[tuple[str, str]]) -> int:
        """Enqueues (job id, body) pairs; how many were added (a queue that knows its jobs
        leaves out those already queued or in flight)."""
        ...

    async def receive(self, count: int, wait: float) -> list[Delivery]:
        """Up to count jobs, waiting up to `wait` seconds for the first one; jobs whose
        worker did not finish them within the lease come first."""
        ...

    async def extend(self, delivery: Delivery) -> bool:
        """Renews the lease of a job under way; False when another worker has it now."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The job is done: never delivered again."""
        ...

    async def retry(self, delivery: Delivery, delay: float) -> None:
        """The job failed: deliver it again after `delay` seconds."""
        ...

    async def fail(self, delivery: Delivery, reason: str) -> None:
        """The job failed for good: into the error list with its reason, never delivered again."""
        ...

    async def counts(self) -> QueueCounts: ...

    async def failures(self, limit: int) -> list[FailedJob]:
        """Up to limit entries of the error list."""
        ...

    async def close(self) -> None: ...


class Notifier(Protocol):
    """Tells the world that a generation is finished (an SNS topic, a Redis channel)."""

    name: str

    async def publish(self, subject: str, message: str) -> None: ...


class Metrics(Protocol):
    """What the server counts and measures (Prometheus), and their exposition."""

    content_type: str  # of `exposition`

    def request(self, endpoint: str, status: int, seconds: float, layer: str = "") -> None: ...

    def tile(self, layer: str, source: str) -> None: ...

    def rendered(self, layer: str, seconds: float) -> None: ...

    def error(self, dependency: str, kind: str) -> None: ...

    def cache_server(self, address: str, up: bool) -> None:
        """Whether a Memcached server answers."""
        ...

    def fold(self) -> None:
        """Adds the counts kept since the last fold (once per event-loop iteration) to the
        metrics: before an exposition or a read of the counters."""
        ...

    def exposition(self) -> bytes:
        """The text format of every metric, over every server process."""
        ...

    def counters(self) -> dict[str, dict[str, float]]:
        """The counters' values by metric name and label set, for /admin/stats."""
        ...
