"""Render processes frozen (SIGSTOP: a debugger, a cgroup freeze, a machine swapping),
then one of them killed (the OOM killer): every job waiting on that pool gets an answer,
rendered again in a new pool, never a wait until the render timeout.

Real render processes and a real `ProcessPoolExecutor`; the faults are signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tests.adapters.test_mapnik_renderer import SEA_TILE, colours, layer
from tests.support.waiting import async_wait_until, wait_until
from tileserver.adapters.mapnik_renderer import MapnikRenderer
from tileserver.adapters.pool_faults import RenderPool
from tileserver.config import Layer
from tileserver.grid import Metatile, metatile_for
from tileserver.types import RenderedTiles, TileCoord

# Seconds a render may take in these tests: a job still waiting then on a pool whose
# process was killed fails "render took longer" (the renders themselves take milliseconds).
RENDER_TIMEOUT = 30.0


def metatiles(sea: Layer, count: int) -> list[Metatile]:
    """count distinct metatiles along the row of SEA_TILE."""
    z, row, col = SEA_TILE.z, SEA_TILE.row, SEA_TILE.col
    return [metatile_for(sea.grid, TileCoord(z, row, col + 4 * i), 4, 16) for i in range(count)]


def state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """The processes stopped (SIGSTOP) for the block, those still alive continued after.
    Stopped, not only signalled: a process not scheduled yet would still take a job."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: all(state(pid) == "T" for pid in pids), "the processes stopped")
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_jobs_queued_behind_frozen_processes_are_answered_once_one_is_killed(
    tmp_path: Path,
) -> None:
    """Both processes frozen with jobs given to them and others queued behind; a readiness
    check gives up on its queued ping; then one process is killed. CPython 3.11's pool
    stops failing its jobs at a job cancelled while queued (gh-107219), and the renderer
    lost sight of the old pool once it had replaced it: the jobs queued after the ping
    waited for the render timeout. Each must be rendered again by the new pool."""
    sea = layer(tmp_path)
    renderer = MapnikRenderer([sea], processes=2, timeout=RENDER_TIMEOUT)
    await renderer.start()
    try:
        assert renderer._pool is not None
        pool = renderer._pool.executor
        pids = sorted(pool._processes)
        assert len(pids) == 2
        wanted = metatiles(sea, 5)
        with frozen(pids):
            # Three jobs fill the pool's call queue (two processes + one); the ping and
            # the jobs after it wait in the pool's own queue.
            given = [asyncio.create_task(renderer.render(sea, m, {"SHOW": "yes"}))
                     for m in wanted[:3]]  # fmt: skip
            await asyncio.sleep(0)  # they are submitted
            problem, _ = await renderer.check(wait=0.5)
            assert problem is not None and problem.startswith("busy"), problem
            queued = [asyncio.create_task(renderer.render(sea, m, {"SHOW": "yes"}))
                      for m in wanted[3:]]  # fmt: skip
            await asyncio.sleep(0)  # the jobs are submitted
            os.kill(pids[0], signal.SIGKILL)
        answers = await asyncio.gather(*given, *queued, return_exceptions=True)
        failed = [a for a in answers if not isinstance(a, RenderedTiles)]
        assert not failed, f"{len(failed)} of {len(answers)} jobs failed: {failed}"
        for metatile, tiles in zip(wanted, answers, strict=True):
            assert isinstance(tiles, RenderedTiles)
            assert set(tiles) == {cut.coord for cut in metatile.tiles}
        assert colours(answers[0][SEA_TILE]) == {(0, 0, 255)}
        assert (await renderer.check())[0] is None
    finally:
        async with asyncio.timeout(20):  # no pool left hanging: close ends
            await renderer.close()


def freeze_while_sending_the_result(job: object) -> None:
    """Run in a render process: stops (SIGSTOP) as one frozen while it sends a large
    result does: the result lock held, the start of a message on the result pipe."""
    import gc
    import struct
    from multiprocessing.queues import SimpleQueue

    results = next(o for o in gc.get_objects() if isinstance(o, SimpleQueue))
    results._wlock.acquire()  # type: ignore[attr-defined]
    os.write(results._writer.fileno(), struct.pack("!i", 1 << 20) + b"\0" * 1000)  # type: ignore[attr-defined]
    os.kill(os.getpid(), signal.SIGSTOP)


async def test_jobs_queued_behind_a_process_frozen_while_sending_are_answered_once_it_is_killed(
    tmp_path: Path,
) -> None:
    """A process frozen while it sends its result leaves the pool's manager thread waiting
    for the rest of that message; jobs wait in the pool's queue; the other process is
    frozen too; then the first is killed and the other continued. The renderer notices
    the dead process and ends the pool. Before, the job that noticed first cancelled its
    queued future on its way out; when that reached the pool before its manager thread
    failed the jobs (1 run in 14 under two CPU hogs), the thread stopped there (CPython
    gh-107219) and the jobs after it waited for the render timeout."""
    sea = layer(tmp_path)
    renderer = MapnikRenderer([sea], processes=2, timeout=RENDER_TIMEOUT)
    await renderer.start()
    loop = asyncio.get_running_loop()
    try:
        assert renderer._pool is not None
        pool = renderer._pool.executor
        pids = sorted(pool._processes)
        # Not a job of the renderer: nothing watches it, it only freezes its process.
        sending = loop.run_in_executor(pool, freeze_while_sending_the_result, None)
        await async_wait_until(lambda: "T" in map(state, pids), "a process frozen while sending")
        stuck = next(pid for pid in pids if state(pid) == "T")
        other = next(pid for pid in pids if pid != stuck)
        wanted = metatiles(sea, 4)
        with frozen([other]):
            jobs = [asyncio.create_task(renderer.render(sea, m, {"SHOW": "yes"}))
                    for m in wanted]  # fmt: skip
            await asyncio.sleep(0)  # they are submitted: queued behind the stuck result
            os.kill(stuck, signal.SIGKILL)
        answers = await asyncio.gather(*jobs, return_exceptions=True)
        failed = [a for a in answers if not isinstance(a, RenderedTiles)]
        assert not failed, f"{len(failed)} of {len(answers)} jobs failed: {failed}"
        for metatile, tiles in zip(wanted, answers, strict=True):
            assert isinstance(tiles, RenderedTiles)
            assert set(tiles) == {cut.coord for cut in metatile.tiles}
            assert colours(tiles[SEA_TILE if SEA_TILE in tiles else next(iter(tiles))])
        with contextlib.suppress(Exception):  # the frozen job died with its process
            await sending
        assert sending.done()
        assert (await renderer.check())[0] is None
    finally:
        async with asyncio.timeout(20):  # no pool left hanging: close ends
            await renderer.close()


async def test_a_job_not_started_before_its_caller_gives_up_is_skipped(tmp_path: Path) -> None:
    """A job that waited in the queue past the time its caller waits (`run_within`) is not
    run when a process takes it: an overloaded pool does not work through renders nobody
    waits for. One that starts in time is run."""
    late, in_time = tmp_path / "late", tmp_path / "in-time"
    executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool = RenderPool(executor)
    try:
        busy = asyncio.ensure_future(pool.run(time.sleep, 0.3))  # the one process, taken
        # Queued behind it with no time to wait at all: skipped when its turn comes.
        assert await pool.run_within(0.0, os.mkdir, str(late)) is None
        assert await busy is None  # time.sleep's
        assert await pool.run_within(RENDER_TIMEOUT, os.mkdir, str(in_time)) is None  # mkdir's
        assert in_time.is_dir()
        assert not late.exists()
    finally:
        await asyncio.to_thread(pool.close)
