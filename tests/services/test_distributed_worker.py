"""The worker loop of distributed generation (services/distributed.py) over the in-memory
queue (tests/support/fakes.py: the JobQueue contract's leases, delivery counts and error
list), the fake renderer and a real FilesystemStore: jobs done once and acknowledged,
retries with their count, the error list and its reasons, leases renewed for long jobs,
stopping."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.configs import single_layer
from tests.support.fakes import FakeRenderer, MemoryQueue, tile_bytes
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.config import Layer
from tileserver.errors import StoreOutage
from tileserver.jobs import QueueCounts, encode_job, job_id_of, make_job
from tileserver.protocols import TileStore
from tileserver.selection import MetatileRef
from tileserver.services.distributed import Worker, layer_jobs, wait_until_empty
from tileserver.services.tile_filters import metatile_of, tiles_in_bbox
from tileserver.types import BBox, TileCoord

Z = 5


@pytest.fixture
def layer(tmp_path: Path) -> Layer:
    return single_layer(tmp_path, levels=10, meta_size=2)


def refs(count: int) -> list[MetatileRef]:
    return [MetatileRef(Z, 0, 2 * i) for i in range(count)]


async def enqueue(queue: MemoryQueue, layer: Layer, metatiles: Sequence[MetatileRef]) -> None:
    jobs = list(layer_jobs(layer, "tiles", metatiles, None))
    await queue.put([(job.id, encode_job(job)) for job in jobs])


def worker(
    queue: MemoryQueue, layer: Layer, store: TileStore, renderer: FakeRenderer, **options: object
) -> Worker:
    return Worker(
        queue,
        renderer,
        {"tiles": store},
        {layer.name: layer},
        wait=0.05,
        **options,  # type: ignore[arg-type]
    )


async def files(store: FilesystemStore) -> dict[str, bytes]:
    found = {}
    async for path in store.list_paths(""):
        data = await store.get(path)
        assert data is not None
        found[path] = data
    return found


async def test_jobs_are_done_once_acknowledged_and_the_worker_stops_when_empty(
    layer: Layer, tmp_path: Path
) -> None:
    queue, renderer = MemoryQueue(), FakeRenderer()
    store = FilesystemStore(str(tmp_path / "tiles"))
    # A bbox over columns 1 to 4 of rows 0 and 1: half of the first and last metatiles.
    grid = layer.grid
    top_left, bottom_right = grid.tile_bbox(TileCoord(Z, 0, 1)), grid.tile_bbox(TileCoord(Z, 1, 4))
    bbox = BBox(top_left.minx, bottom_right.miny, bottom_right.maxx, top_left.maxy)
    jobs = list(layer_jobs(layer, "tiles", refs(3), tiles_in_bbox(grid, bbox)))
    assert [job.mask for job in jobs] == [0b1010, None, 0b0101]  # bit: row * 2 + column
    await queue.put([(job.id, encode_job(job)) for job in jobs])

    stats = await worker(queue, layer, store, renderer, concurrency=2).run()

    assert (stats.done, stats.failed, stats.retried, stats.tiles_written) == (3, 0, 0, 8)
    assert not stats.interrupted and stats.stopped_by is None
    assert renderer.renders == Counter(refs(3))
    assert set(queue.acked.values()) == {1} and len(queue.acked) == 3
    assert await queue.counts() == QueueCounts(0, 0, 0)
    written = await files(store)
    assert len(written) == 8
    assert written["1.0.0/l/default/g/5/1/4.png"] == b"5/1/4 {}"
    assert "1.0.0/l/default/g/5/1/5.png" not in written  # outside the bbox: not wanted
    assert "1.0.0/l/default/g/5/0/0.png" not in written


async def test_a_job_failing_every_time_goes_to_the_error_list_after_max_tries(
    layer: Layer, tmp_path: Path
) -> None:
    queue = MemoryQueue(lease=0.05, max_tries=3)
    poison = refs(2)[1]
    renderer = FakeRenderer(failures={poison: -1, refs(1)[0]: 1})  # the other fails once
    await enqueue(queue, layer, refs(2))
    store = FilesystemStore(str(tmp_path / "tiles"))

    stats = await worker(queue, layer, store, renderer).run()

    assert (stats.done, stats.retried, stats.failed) == (1, 1 + 2, 1)
    assert renderer.renders[poison] == 3
    [failed] = await queue.failures(10)
    assert failed.job_id == "l/tiles/5/2/0"
    assert failed.tries == 3
    assert failed.reason == f"RenderError: no data at {poison}\nsecond line"
    assert await queue.counts() == QueueCounts(0, 0, 1)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{", "not a job message (not JSON"),
        ('{"v": 3}', "job format 3, this worker reads formats 1, 2"),
        (
            encode_job(
                make_job(
                    "l", "tiles", MetatileRef(Z, 0, 0), 2, [TileCoord(Z, 0, 0)], 4, grid="lv95"
                )
            ),
            "layer 'l' has no grid 'lv95'",
        ),
        (
            encode_job(make_job("nope", "tiles", MetatileRef(Z, 0, 0), 2, [TileCoord(Z, 0, 0)], 4)),
            "unknown layer 'nope' (every host needs the same configuration)",
        ),
        (
            encode_job(make_job("l", "s3", MetatileRef(Z, 0, 0), 2, [TileCoord(Z, 0, 0)], 4)),
            "unknown cache 's3'",
        ),
        (
            encode_job(make_job("l", "tiles", MetatileRef(Z, 0, 0), 4, [TileCoord(Z, 0, 0)], 16)),
            "the job's metatiles are 4x4 tiles, layer 'l''s here 2",
        ),
        (
            encode_job(make_job("l", "tiles", MetatileRef(Z, 64, 0), 2, [TileCoord(Z, 64, 0)], 4)),
            "metatile 5/64/0 is outside grid 'g'",
        ),
    ],
)
async def test_a_job_this_worker_cannot_do_fails_at_once_with_the_reason(
    layer: Layer, tmp_path: Path, body: str, reason: str
) -> None:
    queue, renderer = MemoryQueue(), FakeRenderer()
    await queue.put([(job_id_of(body), body)])
    stats = await worker(queue, layer, FilesystemStore(str(tmp_path)), renderer).run()
    assert (stats.done, stats.retried, stats.failed) == (0, 0, 1)
    [failed] = await queue.failures(10)
    assert failed.tries == 1
    assert reason in failed.reason
    assert not renderer.renders


async def test_a_job_delivered_more_than_max_tries_is_not_tried_again(
    layer: Layer, tmp_path: Path
) -> None:
    """Workers that die on a job (killed, out of memory) never answer: the delivery count
    ends it."""
    queue, renderer = MemoryQueue(lease=0.01, max_tries=2), FakeRenderer()
    await enqueue(queue, layer, refs(1))
    for _ in range(2):  # two workers took it and died
        assert len(await queue.receive(1, 0)) == 1
        await asyncio.sleep(0.02)
    stats = await worker(queue, layer, FilesystemStore(str(tmp_path)), renderer).run()
    assert stats.failed == 1
    [failed] = await queue.failures(10)
    assert failed.tries == 3
    assert failed.reason.startswith("delivered 3 times without an answer")
    assert not renderer.renders


async def test_a_job_longer_than_the_lease_keeps_it_and_is_done_once(
    layer: Layer, tmp_path: Path
) -> None:
    queue = MemoryQueue(lease=1.0)  # renewed every third of a lease: a stall of 0.6 s is fine
    gate = asyncio.Event()
    renderer = FakeRenderer(gate=gate)
    await enqueue(queue, layer, refs(4))
    store = FilesystemStore(str(tmp_path / "tiles"))
    workers = [worker(queue, layer, store, renderer, concurrency=2) for _ in range(2)]
    both = asyncio.gather(*(w.run() for w in workers))
    # The renders end once every job has been renewed 4 times: each ran over a lease.
    async with asyncio.timeout(60):  # bounds a hang only
        while len(queue.extended) < 4 or min(queue.extended.values()) < 4:
            await queue.wait_for_change()
    gate.set()
    assert [s.done for s in await both] == [2, 2]  # shared
    assert renderer.renders == Counter(refs(4))  # never taken over
    assert renderer.most_in_flight == 4  # the two workers ran two jobs each at once


async def test_stop_finishes_the_jobs_under_way_and_leaves_the_others_queued(
    layer: Layer, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    queue, renderer = MemoryQueue(), FakeRenderer(gate=gate)
    await enqueue(queue, layer, refs(5))
    running = worker(queue, layer, FilesystemStore(str(tmp_path)), renderer, concurrency=2)
    task = asyncio.create_task(running.run())
    async with asyncio.timeout(60):  # bounds a hang only
        while renderer.in_flight < 2:
            await renderer.wait_for_render()
    running.stop()
    gate.set()
    stats = await task
    assert stats.interrupted and stats.stopped_by is None
    assert stats.done == 2
    assert await queue.counts() == QueueCounts(3, 0, 0)


class LaggingCounts(MemoryQueue):
    """A queue whose counts once say it is empty while a job is hidden, as SQS's may
    (approximate counts; a job coming back from its retry delay between the two counts)."""

    lies = 1

    async def counts(self) -> QueueCounts:
        if self.lies and self.entries:
            self.lies -= 1
            return QueueCounts(0, 0, len(self.failed))
        return await super().counts()


async def test_a_worker_does_not_stop_on_one_empty_count_while_a_job_waits_for_its_retry(
    layer: Layer, tmp_path: Path
) -> None:
    queue = LaggingCounts(lease=1.0)
    await enqueue(queue, layer, refs(1))
    [ref] = refs(1)
    renderer = FakeRenderer(failures={ref: 1})  # the first try fails: retried after 1 s
    stats = await worker(queue, layer, FilesystemStore(str(tmp_path)), renderer).run()
    assert queue.lies == 0  # the worker was told once that nothing was left
    assert (stats.done, stats.retried, stats.failed) == (1, 1, 0)
    assert sum(queue.acked.values()) == 1 and await queue.counts() == QueueCounts(0, 0, 0)


async def test_a_daemon_waits_for_jobs_until_stopped(layer: Layer, tmp_path: Path) -> None:
    queue, renderer = MemoryQueue(), FakeRenderer()
    daemon = worker(queue, layer, FilesystemStore(str(tmp_path)), renderer, daemon=True)
    task = asyncio.create_task(daemon.run())
    await asyncio.sleep(0.1)
    assert not task.done()  # an empty queue does not end a daemon
    await enqueue(queue, layer, refs(2))
    await asyncio.wait_for(wait_until_empty(queue, poll=0.01), 5)
    daemon.stop()
    stats = await task
    assert stats.done == 2


class OutageStore(FilesystemStore):
    async def put_many(self, items: Mapping[str, bytes], content_type: str) -> None:
        raise StoreOutage(f"{self.root}: No space left on device")


async def test_a_store_outage_gives_the_job_back_and_stops_the_worker(
    layer: Layer, tmp_path: Path
) -> None:
    queue, renderer = MemoryQueue(), FakeRenderer()
    await enqueue(queue, layer, refs(3))
    stats = await worker(queue, layer, OutageStore(str(tmp_path)), renderer, concurrency=1).run()
    assert stats.stopped_by is not None
    assert "No space left on device" in stats.stopped_by
    assert (stats.done, stats.failed) == (0, 0)
    assert await queue.counts() == QueueCounts(3, 0, 0)  # nothing lost, nothing failed


async def test_wait_until_empty_needs_the_counts_to_stay_empty(layer: Layer) -> None:
    queue = MemoryQueue()
    await enqueue(queue, layer, refs(1))
    seen: list[QueueCounts] = []
    waiting = asyncio.create_task(
        wait_until_empty(queue, poll=0.01, settle=0.1, progress=seen.append)
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()
    [delivery] = await queue.receive(1, 0)
    await queue.ack(delivery)
    started = time.monotonic()
    assert await asyncio.wait_for(waiting, 5) == QueueCounts(0, 0, 0)
    assert time.monotonic() - started >= 0.1
    assert seen[0] == QueueCounts(1, 0, 0)


async def test_jobs_of_another_grid_and_dimension_value_go_to_their_own_tile_set(
    tmp_path: Path,
) -> None:
    layer = single_layer(
        tmp_path, levels=10, meta_size=2, grids=["g", "h"],
        dimensions=[{"name": "DATE", "values": ["2010", "2012"], "default": "2012"}],
    )  # fmt: skip
    on_h = layer.on_grid("h")
    assert on_h is not None
    jobs = list(layer_jobs(on_h, "tiles", refs(1), None, {"DATE": "2010"}))
    assert [job.id for job in jobs] == ["l:h;DATE=2010/tiles/5/0/0"]
    assert '"v":2' in encode_job(jobs[0])  # a format 1 worker refuses it
    jobs += layer_jobs(layer, "tiles", refs(1), None)  # the first grid, the default
    assert jobs[1].id == "l/tiles/5/0/0"
    queue, store = MemoryQueue(), FilesystemStore(str(tmp_path / "tiles"))
    await queue.put([(job.id, encode_job(job)) for job in jobs])
    stats = await worker(queue, layer, store, FakeRenderer()).run()
    assert (stats.done, stats.failed) == (2, 0)
    written = await files(store)
    coord = TileCoord(Z, 0, 0)
    assert written["1.0.0/l/default/2010/h/5/0/0.png"] == tile_bytes(coord, {"DATE": "2010"})
    assert written["1.0.0/l/default/2012/g/5/0/0.png"] == tile_bytes(coord, {"DATE": "2012"})
    assert len(written) == 8


def test_layer_jobs_leave_out_metatiles_without_a_wanted_tile(layer: Layer) -> None:
    def nothing(coord: TileCoord) -> bool:
        return False

    assert list(layer_jobs(layer, "tiles", refs(3), nothing)) == []
    jobs = list(layer_jobs(layer, "tiles", refs(1), None))
    assert [job.id for job in jobs] == ["l/tiles/5/0/0"]
    assert len(metatile_of(layer, refs(1)[0]).tiles) == 4
