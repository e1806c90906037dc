"""`generate_tiles --role master|worker`: generation across many machines. The master
puts the selection's metatiles in the queue of the `redis` or `sqs` section as jobs (and
with --wait announces the end); a worker renders the queue's jobs until it is empty, or
forever with --daemon (services/distributed.py)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

from tileserver import composition
from tileserver.cli.common import CommandError
from tileserver.cli.generate_context import (
    EXIT_INTERRUPTED,
    PLAIN_PROGRESS_EVERY,
    GenerateContext,
    ProgressLines,
)
from tileserver.jobs import QueueCounts, encode_job
from tileserver.protocols import JobQueue
from tileserver.selection import format_zooms
from tileserver.services.distributed import Worker, WorkerStats, layer_jobs, wait_until_empty
from tileserver.services.planning import LayerJob

ROLES = ("local", "master", "worker", "slave")  # --role; slave is TileCloud-chain's worker
WORKER_WAIT = 2.0  # seconds a worker waits for a job before it looks whether the queue is done
DAEMON_WAIT = 20.0  # the same for --daemon (SQS's longest poll: fewer requests)


def run(ctx: GenerateContext) -> int:
    """--role master or worker (and the checks of --daemon and --wait); the exit status."""
    args = ctx.args
    role = "worker" if args.role == "slave" else args.role
    if args.daemon and role != "worker":
        raise CommandError("--daemon goes with --role worker", 2)
    if args.wait and role != "master":
        raise CommandError("--wait goes with --role master", 2)
    excluded = {"--update": args.update, "--delete-empty": args.delete_empty,
                "--get-hash": args.get_hash, "--get-bbox": args.get_bbox}  # fmt: skip
    for option, value in excluded.items():
        if value:
            raise CommandError(f"--role {args.role} cannot be combined with {option}", 2)
    if role == "worker":
        chosen = [option for option, value in (
            ("--layer", args.layer), ("--cache", args.cache), ("--zoom", args.zoom),
            ("--bbox", args.bbox), ("--geom", args.geom), ("--tiles", args.tiles),
            ("--dry-run", args.dry_run)) if value]  # fmt: skip
        if chosen:
            raise CommandError(
                f"--role {args.role} takes its jobs from the queue, which the master filled: "
                f"leave out {', '.join(chosen)}",
                2,
            )
    queue = composition.job_queue(ctx.config)
    if queue is None:
        raise CommandError(
            f"--role {args.role} needs a `sqs` or `redis` section in {args.config}: the queue "
            "of the jobs (see 'Generation across many machines' in the README)"
        )
    if role == "worker":
        return asyncio.run(work(ctx, queue))
    jobs = ctx.planner.jobs(ctx.read_selection())
    if args.dry_run:
        return ctx.dry_run(jobs)
    return asyncio.run(enqueue(ctx, jobs, queue))


async def enqueue(ctx: GenerateContext, jobs: Sequence[LayerJob], queue: JobQueue) -> int:
    """--role master: the jobs of every metatile into the queue, and with --wait, the
    wait for the end and its announcement; the exit status."""
    for job in jobs:
        ctx.describe(job)
    messages = [
        (job.id, encode_job(job))
        for layer_job in jobs
        for job in layer_jobs(
            layer_job.layer,
            layer_job.cache,
            layer_job.metatiles,
            layer_job.wanted,
            layer_job.dimensions,
        )
    ]
    await queue.open(create=True)
    try:
        added = await queue.put(messages)
        print(
            f"enqueued {added} jobs on {queue.name} ({len(messages) - added} of the "
            f"{len(messages)} already queued or in flight)",
            file=ctx.out,
        )
        if not ctx.args.wait:
            return 0
        start = await queue.counts()
        lines = ProgressLines(ctx.args.quiet, at_once=True)

        def progress(counts: QueueCounts) -> None:
            if lines.due():
                ctx.info(f"{counts.queued} jobs queued, {counts.in_flight} in flight, "
                          f"{counts.failed} failed")  # fmt: skip

        poll = min(PLAIN_PROGRESS_EVERY, max(0.5, queue.lease / 4))
        end = await wait_until_empty(queue, poll=poll, settle=queue.counts_delay, progress=progress)
        failed = max(0, end.failed - start.failed)
        names = ", ".join(f"{j.layer.name} (zooms {format_zooms(j.zooms)})" for j in jobs)
        message = (
            f"The generation of {names} is finished: {len(messages)} jobs, {failed} of "
            f"them failed. {end.failed} jobs are in the error list of {queue.name} "
            "(generate_controller --status lists them with their reasons)."
        )
        for notifier in composition.notifiers(ctx.config, queue):
            await notifier.publish("tileserver: generation finished", message)
            ctx.info(f"announced the end on {notifier.name}")
        print(f"finished: {len(messages)} jobs, {failed} failed", file=ctx.out)
        if failed:
            print(f"{ctx.prog}: {failed} job(s) failed: generate_controller --status "
                  "lists them", file=ctx.err)  # fmt: skip
        return 1 if failed else 0
    finally:
        await queue.close()


async def work(ctx: GenerateContext, queue: JobQueue) -> int:
    """--role worker: renders the queue's jobs until it is empty (or forever with
    --daemon, until SIGINT or SIGTERM); the exit status."""
    processes = ctx.processes()
    await queue.open()
    renderer = None
    worker: Worker | None = None
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal() -> None:
        if worker is None or worker.stats.interrupted:
            if main_task is not None:
                main_task.cancel()  # a second Ctrl-C: stop now
            return
        worker.stats.interrupted = True
        ctx.info("stopping: finishing the jobs under way (Ctrl-C again to stop now)")
        worker.stop()

    lines = ProgressLines(ctx.args.quiet)

    def progress(stats: WorkerStats) -> None:
        if lines.due():
            ctx.info(f"{stats.done} jobs, {stats.tiles_written + stats.empty_dropped} "
                      f"tiles, {stats.tiles_per_second:.1f} tiles/s")  # fmt: skip

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        renderer = composition.generation_renderer(
            list(ctx.config.layers.values()), processes, ctx.config
        )
        await renderer.start()
        stores = {
            name: composition.tile_store(cache, ctx.config)
            for name, cache in ctx.config.caches.items()
        }
        worker = Worker(
            queue,
            renderer,
            stores,
            ctx.config.layers,
            concurrency=processes + 1,
            daemon=ctx.args.daemon,
            wait=DAEMON_WAIT if ctx.args.daemon else WORKER_WAIT,
            progress=progress,
        )
        ctx.info(f"worker with {processes} render process(es), jobs from {queue.name}")
        stats = await worker.run()
    except asyncio.CancelledError:
        if main_task is not None:
            main_task.uncancel()
        print("interrupted: the jobs under way come back after the lease", file=ctx.err)
        return EXIT_INTERRUPTED
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if renderer is not None:
            await renderer.close()
        await queue.close()
    print(stats.summary(), file=ctx.out)
    if stats.stopped_by is not None:
        print(f"{ctx.prog}: stopped: {stats.stopped_by}", file=ctx.err)
        return 1
    if stats.interrupted:
        print("interrupted: the jobs not started stay in the queue", file=ctx.err)
        return EXIT_INTERRUPTED
    return 0
