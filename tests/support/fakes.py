"""The in-process stand-ins the service tests share: a renderer without Mapnik, a job
queue in memory, and a clock the test moves. The renderer and the queue pass their
Protocol's contract suite (tests/contract) beside the real backends, so a service test
over them says something about the real thing.

    renderer = FakeRenderer(failures={ref: 1}, empty=[coord])
    queue = MemoryQueue(lease=1.0, max_tries=3)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tileserver.config import Layer
from tileserver.errors import RenderError
from tileserver.grid import Metatile
from tileserver.jobs import Delivery, FailedJob, QueueCounts
from tileserver.selection import MetatileRef
from tileserver.types import TileCoord

EMPTY = b"\x89PNG plain sea"  # what FakeRenderer answers for its `empty` tiles


class ManualClock:
    """A clock the test moves: its `now` (seconds), read by calling it. The default stands
    for a Unix time (render times are compared with it)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def tile_bytes(coord: TileCoord, dimensions: Mapping[str, str]) -> bytes:
    """The bytes FakeRenderer answers for a tile: its coordinates and dimension values,
    e.g. b"17/47784/68240 {'D': 'a'}"."""
    return f"{coord} {dict(dimensions)}".encode()


class FakeRenderer:
    """A Renderer whose tiles name themselves (`tile_bytes`; `EMPTY` for `empty` ones, or
    what `image(layer)` returns), counting renders by metatile.

    - `failures[ref]`: how many renders of that metatile raise RenderError (-1: all);
      `fail` makes every render fail until it is set back to False.
    - `gate`: when given, every render waits for it to be set (the test decides when a
      render ends, instead of a delay it hopes is long enough); `started` is set as the
      first render begins. `delay` is a plain sleep, for tests of throughput only.
    - answer first: a render asked for a `first` tile hands it to `on_first` once the
      gate opens, then waits for `rest_gate` (when given) before returning every tile:
      the rest of the metatile is still being encoded.
    - `check_values`: the render asserts that only values the layer validated reach it.
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
        fail: bool = False,
        failures: Mapping[MetatileRef, int] | None = None,
        empty: Iterable[TileCoord] = (),
        image: Callable[[Layer], bytes] | None = None,
        check_values: bool = False,
        rest_gate: asyncio.Event | None = None,
    ) -> None:
        self.delay = delay
        self.gate = gate
        self.rest_gate = rest_gate
        self.firsts = 0  # first tiles handed out ahead of their render's end
        self.fail = fail
        self.failures = dict(failures or {})
        self.empty = set(empty)
        self.image = image
        self.check_values = check_values
        self.renders: Counter[MetatileRef] = Counter()
        self.started = asyncio.Event()
        self.in_flight = self.most_in_flight = 0
        self.on_render: Callable[[], None] | None = None  # called as each render starts
        self.encoded = 0  # tiles returned, as a real renderer encodes them
        self.closed = False
        self._watchers: list[asyncio.Future[None]] = []

    async def wait_for_render(self) -> None:
        """Returns as the next render starts."""
        watcher = asyncio.get_running_loop().create_future()
        self._watchers.append(watcher)
        await watcher

    @property
    def count(self) -> int:
        """Renders so far, of every metatile."""
        return sum(self.renders.values())

    async def render(
        self,
        layer: Layer,
        metatile: Metatile,
        dimensions: Mapping[str, str],
        only: Collection[TileCoord] | None = None,
        first: TileCoord | None = None,
        on_first: Callable[[bytes], None] | None = None,
    ) -> dict[TileCoord, bytes]:
        if self.closed:
            raise RenderError("the renderer is closed")
        if self.check_values:
            assert 0 <= metatile.z < len(layer.grid.resolutions)
            assert {d.name for d in layer.dimensions} == set(dimensions)
            for dimension in layer.dimensions:
                assert dimensions[dimension.name] in dimension.values
        ref = MetatileRef(metatile.z, metatile.row, metatile.col)
        self.renders[ref] += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.started.set()
        for watcher in self._watchers:
            if not watcher.done():
                watcher.set_result(None)
        self._watchers.clear()
        if self.on_render is not None:
            self.on_render()
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        left = self.failures.get(ref, 0)
        if left:
            self.failures[ref] = left - 1
            raise RenderError(f"no data at {ref}\nsecond line")
        if self.fail:
            raise RenderError("boom")
        if first is not None and on_first is not None:
            self.firsts += 1
            on_first(self._tile(layer, first, dimensions))
            if self.rest_gate is not None:
                await self.rest_gate.wait()
        tiles = {
            t.coord: self._tile(layer, t.coord, dimensions)
            for t in metatile.tiles
            if only is None or t.coord in only
        }
        self.encoded += len(tiles)
        return tiles

    def _tile(self, layer: Layer, coord: TileCoord, dimensions: Mapping[str, str]) -> bytes:
        if coord in self.empty:
            return EMPTY
        if self.image is not None:
            return self.image(layer)
        return tile_bytes(coord, dimensions)

    async def close(self) -> None:
        self.closed = True


@dataclass
class _Entry:
    job_id: str
    body: str
    tries: int = 0
    visible_at: float = 0.0
    delivery: int = 0  # which delivery holds it: an older receipt can no longer touch it


class MemoryQueue:
    """A JobQueue in memory, with the semantics of the real ones: a received job is hidden
    for `lease` seconds, then delivered again (before new jobs) with its count of tries;
    `fail` keeps a job in the error list with its reason; as SQS, a job put twice is
    there twice. `acked` counts the acknowledgements by job id."""

    name = "memory"
    counts_delay = 0.0

    def __init__(self, lease: float = 1.0, max_tries: int = 3) -> None:
        self.lease = lease
        self.max_tries = max_tries
        self.entries: dict[str, _Entry] = {}
        self.failed: dict[str, FailedJob] = {}
        self.acked: Counter[str] = Counter()
        self.extended: Counter[str] = Counter()  # renewals of a lease, by job id
        self._next = 0
        self._watchers: list[asyncio.Future[None]] = []

    def _notify(self) -> None:
        for watcher in self._watchers:
            if not watcher.done():
                watcher.set_result(None)
        self._watchers.clear()

    async def wait_for_change(self) -> None:
        """Returns at the next put, receive, extend, ack, retry or fail (tests wait for a
        state of the queue with this, never for a time)."""
        watcher = asyncio.get_running_loop().create_future()
        self._watchers.append(watcher)
        await watcher

    async def open(self, create: bool = False) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put(self, messages: Sequence[tuple[str, str]]) -> int:
        for job_id, body in messages:  # as SQS: a job put twice is there twice
            self._next += 1
            self.entries[str(self._next)] = _Entry(job_id, body)
        self._notify()
        return len(messages)

    def _entry(self, delivery: Delivery) -> _Entry | None:
        key, number = delivery.receipt.split("#")
        entry = self.entries.get(key)
        return entry if entry is not None and entry.delivery == int(number) else None

    async def receive(self, count: int, wait: float) -> list[Delivery]:
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            found = []
            # Jobs whose lease ran out first (they come back before new ones), then new.
            ready = sorted(
                (e for e in self.entries.items() if e[1].visible_at <= now),
                key=lambda item: item[1].tries == 0,
            )
            for key, entry in ready[:count]:
                entry.tries += 1
                entry.delivery += 1
                entry.visible_at = now + self.lease
                found.append(Delivery(f"{key}#{entry.delivery}", entry.job_id, entry.body,
                                      entry.tries))  # fmt: skip
            if found:
                self._notify()
                return found
            if now >= deadline:
                return found
            # Until a job is put (back) or the next lease runs out, at most until deadline.
            hidden = [e.visible_at for e in self.entries.values()]
            until = min([deadline, *hidden]) - now
            try:
                async with asyncio.timeout(max(until, 0.001)):
                    await self.wait_for_change()
            except TimeoutError:
                pass

    async def extend(self, delivery: Delivery) -> bool:
        entry = self._entry(delivery)
        if entry is None:
            return False
        entry.visible_at = time.monotonic() + self.lease
        self.extended[delivery.job_id] += 1
        self._notify()
        return True

    async def ack(self, delivery: Delivery) -> None:
        self.acked[delivery.job_id] += 1
        self.entries.pop(delivery.receipt.split("#")[0], None)
        self._notify()

    async def retry(self, delivery: Delivery, delay: float) -> None:
        entry = self._entry(delivery)
        if entry is not None:
            entry.visible_at = time.monotonic() + delay
            self._notify()

    async def fail(self, delivery: Delivery, reason: str) -> None:
        self.failed[delivery.job_id] = FailedJob(
            delivery.job_id, delivery.body, reason, delivery.tries, time.time()
        )
        self.entries.pop(delivery.receipt.split("#")[0], None)
        self._notify()

    async def counts(self) -> QueueCounts:
        now = time.monotonic()
        queued = sum(1 for e in self.entries.values() if e.visible_at <= now)
        return QueueCounts(queued, len(self.entries) - queued, len(self.failed))

    async def failures(self, limit: int) -> list[FailedJob]:
        return list(self.failed.values())[:limit]
