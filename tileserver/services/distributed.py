"""Generation across many machines: the jobs of a master, the loop of a worker, and the
wait for the end (`generate_tiles --role master/worker`).

The master turns each layer's metatiles into jobs (`tileserver.jobs`) and puts them in a
`JobQueue`. Workers on any number of hosts take jobs from it, render each metatile with
the same `TileGenerator` as a local run (wanted tiles only, empty tiles dropped, one
atomic `put_many`) and acknowledge it. Delivery is at least once: a job whose worker dies
comes back after the queue's lease; since writes are idempotent, a job done twice writes
the same tiles again (the same pixels). A job that fails is delivered again after a
backoff, and after `max_tries` deliveries goes to the queue's error list with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from tileserver.config import Layer
from tileserver.errors import QueueUnavailable, StoreUnavailable
from tileserver.jobs import Delivery, Job, JobError, QueueCounts, decode_job, make_job
from tileserver.protocols import JobQueue, Renderer, TileStore
from tileserver.selection import MetatileRef
from tileserver.services.generation import MetatileOutcome, TileCounts, TileGenerator
from tileserver.services.tile_filters import TileFilter, metatile_of, wanted_tiles
from tileserver.types import TileCoord

log = logging.getLogger("tileserver.generate")

MAX_RETRY_DELAY = 60.0  # seconds: the backoff of a failed job doubles up to this
QUEUE_RETRY_DELAY = 30.0  # seconds: a daemon worker asks a failing queue again up to this


def layer_jobs(
    layer: Layer,
    cache: str,
    metatiles: Iterable[MetatileRef],
    wanted: TileFilter | None,
    dimensions: Mapping[str, str] | None = None,
) -> Iterator[Job]:
    """The jobs of a layer's metatiles (on its grid `layer.grid`, with those dimension
    values, default: the defaults), each with the tiles `wanted` keeps (metatiles with none
    are left out)."""
    meta_size = layer.effective_meta_size
    grid = "" if layer.grid.name == layer.grids[0].name else layer.grid.name
    values = {d.name: d.default for d in layer.dimensions} | dict(dimensions or {})
    defaults = all(values[d.name] == d.default for d in layer.dimensions)
    named = () if defaults else tuple((d.name, values[d.name]) for d in layer.dimensions)
    for ref in metatiles:
        tiles = wanted_tiles(layer, ref, wanted)
        if tiles:
            all_tiles = len(metatile_of(layer, ref).tiles)
            yield make_job(layer.name, cache, ref, meta_size, tiles, all_tiles, grid, named)


@dataclass
class WorkerStats(TileCounts):
    """Counters of a worker; `tiles_per_second` counts the tiles written and dropped."""

    done: int = 0
    retried: int = 0  # failed deliveries given back to the queue
    failed: int = 0  # jobs this worker put in the error list
    interrupted: bool = False
    stopped_by: str | None = None  # why the worker stopped early (the store, the queue)

    def summary(self) -> str:
        return (
            f"worker: {self.done} jobs done, {self.tiles_written} tiles written, "
            f"{self.empty_dropped} empty dropped, {self.retried} retried, {self.failed} failed, "
            f"{self.elapsed:.1f} s, {self.tiles_per_second:.1f} tiles/s"
        )


class Worker:
    """Takes jobs from a queue and renders them until the queue is empty (nothing queued
    nor in flight anywhere), or forever with `daemon`; `stop` finishes the jobs under way
    and returns.

    `concurrency` jobs run at once (the render processes plus one). `stores` are the tile
    stores by cache name, opened when a job first names them and closed at the end.
    """

    def __init__(
        self,
        queue: JobQueue,
        renderer: Renderer,
        stores: Mapping[str, TileStore],
        layers: Mapping[str, Layer],
        *,
        concurrency: int = 2,
        daemon: bool = False,
        wait: float = 2.0,
        progress: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        self.queue = queue
        self.renderer = renderer
        self.stores = stores
        self.layers = layers
        self.concurrency = max(1, concurrency)
        self.daemon = daemon
        self.wait = wait
        self.progress = progress
        self.stats = WorkerStats()
        self._opened: dict[str, TileStore] = {}
        self._stop = asyncio.Event()

    def stop(self, reason: str | None = None) -> None:
        """Takes no more jobs; those under way finish and are acknowledged."""
        if reason is not None and self.stats.stopped_by is None:
            self.stats.stopped_by = reason
        self._stop.set()

    async def run(self) -> WorkerStats:
        running: set[asyncio.Task[None]] = set()
        failures = 0  # receives in a row that failed
        empty_since: float | None = None  # when the queue's counts were first seen empty
        try:
            while not self._stop.is_set():
                running.difference_update([task for task in running if task.done()])
                free = self.concurrency - len(running)
                if free <= 0:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    deliveries = await self._receive(free)
                except QueueUnavailable as exc:
                    failures += 1
                    if not self.daemon and failures >= 3:
                        self.stop(str(exc))
                        break
                    delay = min(QUEUE_RETRY_DELAY, 2.0 ** (failures - 1))
                    log.warning("%s; again in %g s", exc, delay)
                    await self._sleep(delay)
                    continue
                failures = 0
                if deliveries is None:  # stopped while waiting
                    break
                running.update(asyncio.create_task(self._handle(d)) for d in deliveries)
                running.difference_update([task for task in running if task.done()])
                if deliveries or running or self.daemon:
                    empty_since = None
                    continue
                counts = await self.queue.counts()
                if counts.queued or counts.in_flight:
                    # Jobs are in flight on other workers: they come back if those die.
                    empty_since = None
                    continue
                # Empty: so once more after another receive, and for the queue's
                # counts_delay. SQS's counts are approximate and lag; even exact ones may
                # miss a job whose retry delay ends between its two counts (queued, then
                # hidden), as it turns from hidden to queued.
                now = time.monotonic()
                if empty_since is None:
                    empty_since = now
                elif now - empty_since >= self.queue.counts_delay:
                    break
        except asyncio.CancelledError:
            # Stop now: the jobs under way are not acknowledged, they come back after the lease.
            for task in running:
                task.cancel()
            raise
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            self.stats.interrupted = self._stop.is_set()
            self.stats.finished = time.monotonic()
            for store in self._opened.values():
                await store.close()
        return self.stats

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _receive(self, count: int) -> list[Delivery] | None:
        """Up to count jobs; None when `stop` was called while waiting for them."""
        receiving = asyncio.ensure_future(self.queue.receive(count, self.wait))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not receiving.done():
            # The jobs SQS or Redis may have handed out meanwhile come back after the lease.
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, QueueUnavailable):
                await receiving
            return None
        return receiving.result()

    async def _handle(self, delivery: Delivery) -> None:
        keeper = asyncio.create_task(self._keep(delivery))
        try:
            await self._do(delivery)
        except QueueUnavailable as exc:
            # Not acknowledged: the job comes back after the lease (at least once).
            log.error("job %s: %s", delivery.job_id, exc)
        except Exception as exc:  # a bug: stop rather than spin on every job
            log.exception("job %s", delivery.job_id)
            self.stop(f"job {delivery.job_id}: {type(exc).__name__}: {exc}")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if self.progress is not None:
            self.progress(self.stats)

    async def _keep(self, delivery: Delivery) -> None:
        """Renews the job's lease while it runs, three times per lease."""
        while True:
            await asyncio.sleep(self.queue.lease / 3)
            try:
                if not await self.queue.extend(delivery):
                    log.warning(
                        "job %s: another worker took it over (it ran longer than the lease, "
                        "%g s); both write the same tiles",
                        delivery.job_id,
                        self.queue.lease,
                    )
                    return
            except QueueUnavailable as exc:
                log.warning("job %s: cannot renew its lease: %s", delivery.job_id, exc)

    async def _fail(self, delivery: Delivery, reason: str) -> None:
        log.error(
            "job %s goes to the error list after %d tries: %s",
            delivery.job_id,
            delivery.tries,
            reason,
        )
        await self.queue.fail(delivery, reason)
        self.stats.failed += 1

    async def _retry(self, delivery: Delivery, reason: str) -> None:
        if delivery.tries >= self.queue.max_tries:
            await self._fail(delivery, reason)
            return
        delay = min(MAX_RETRY_DELAY, self.queue.lease, 2.0 ** (delivery.tries - 1))
        log.warning(
            "job %s failed (try %d of %d), again in %g s: %s",
            delivery.job_id,
            delivery.tries,
            self.queue.max_tries,
            delay,
            reason,
        )
        await self.queue.retry(delivery, delay)
        self.stats.retried += 1

    async def _do(self, delivery: Delivery) -> None:
        if delivery.tries > self.queue.max_tries:
            await self._fail(
                delivery,
                f"delivered {delivery.tries} times without an answer: the workers that had it "
                "died or were stopped while rendering it",
            )
            return
        try:
            job = decode_job(delivery.body)
            layer, store = self._resolve(job)
        except JobError as exc:  # it can never succeed
            await self._fail(delivery, str(exc))
            return
        try:
            store = await self._open(job.cache, store)
        except StoreUnavailable as exc:
            await self.queue.retry(delivery, 0)
            self.stop(f"cache {job.cache}: {exc}")
            return
        outcomes: list[MetatileOutcome] = []
        generator = TileGenerator(
            layer,
            self.renderer,
            store,
            dimensions=dict(job.dimensions) or None,
            wanted=job.wants,
            concurrency=1,
            retries=0,  # the queue retries, with its own backoff and count
            progress=lambda outcome, _: outcomes.append(outcome),
        )
        stats = await generator.run([job.ref])
        if stats.done:
            await self.queue.ack(delivery)
            self.stats.done += 1
            self.stats.tiles_written += stats.tiles_written
            self.stats.empty_dropped += stats.empty_dropped
        elif stats.failed:
            await self._retry(delivery, outcomes[-1].reason if outcomes else "failed")
        elif stats.store_outage is not None:
            # Every job would fail alike: give this one back untouched and stop.
            await self.queue.retry(delivery, 0)
            self.stop(f"the tile store fails: {stats.store_outage}")
        else:
            await self.queue.retry(delivery, 0)

    def _resolve(self, job: Job) -> tuple[Layer, TileStore]:
        """The layer and store of a job; JobError when this configuration cannot do it."""
        same = "every host needs the same configuration"
        layer = self.layers.get(job.layer)
        if layer is None:
            raise JobError(f"unknown layer {job.layer!r} ({same})")
        if job.grid:
            variant = layer.on_grid(job.grid)
            if variant is None:
                raise JobError(f"layer {layer.name!r} has no grid {job.grid!r} ({same})")
            layer = variant
        values = {d.name: d.values for d in layer.dimensions}
        for name, value in job.dimensions:
            if value not in values.get(name, ()):
                raise JobError(f"layer {layer.name!r} has no dimension value {name}={value} "
                               f"({same})")  # fmt: skip
        store = self.stores.get(job.cache)
        if store is None:
            raise JobError(f"unknown cache {job.cache!r} ({same})")
        if job.meta_size != layer.effective_meta_size:
            raise JobError(
                f"the job's metatiles are {job.meta_size}x{job.meta_size} tiles, layer "
                f"{layer.name!r}'s here {layer.effective_meta_size} ({same})"
            )
        if not layer.grid.contains(TileCoord(job.ref.z, job.ref.row, job.ref.col)):
            raise JobError(f"metatile {job.ref} is outside grid {layer.grid.name!r} ({same})")
        return layer, store

    async def _open(self, cache: str, store: TileStore) -> TileStore:
        if cache not in self._opened:
            await store.open()
            self._opened[cache] = store
        return store


async def wait_until_empty(
    queue: JobQueue,
    *,
    poll: float,
    settle: float = 0.0,
    progress: Callable[[QueueCounts], None] | None = None,
) -> QueueCounts:
    """Polls the queue's counts every `poll` seconds until nothing is queued nor in flight,
    seen so for `settle` seconds (SQS's approximate counts lag); the last counts."""
    empty_since: float | None = None
    while True:
        counts = await queue.counts()
        if progress is not None:
            progress(counts)
        if counts.queued == 0 and counts.in_flight == 0:
            now = time.monotonic()
            empty_since = now if empty_since is None else empty_since
            if now - empty_since >= settle:
                return counts
        else:
            empty_since = None
        await asyncio.sleep(poll)
