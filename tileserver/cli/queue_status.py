"""`generate_controller --status`: the counts of the queue of a distributed generation
(`generate_tiles --role master/worker`), then its failed jobs with their reasons."""

from __future__ import annotations

import time
from typing import TextIO

from tileserver import composition
from tileserver.cli.common import CommandError
from tileserver.config import Config
from tileserver.protocols import JobQueue

STATUS_FAILURES = 50  # failed jobs --status lists


def status_queue(config: Config, config_path: str) -> JobQueue:
    """The queue --status reads; CommandError without one."""
    queue = composition.job_queue(config)
    if queue is None:
        raise CommandError(
            f"--status needs a `sqs` or `redis` section in {config_path}: the queue of "
            "generate_tiles --role master/worker"
        )
    return queue


async def print_status(queue: JobQueue, out: TextIO) -> None:
    """--status: the queue's counts, then its failed jobs with their reasons."""
    await queue.open()
    try:
        counts = await queue.counts()
        failures = await queue.failures(STATUS_FAILURES) if counts.failed else []
    finally:
        await queue.close()
    print(f"queue: {queue.name}", file=out)
    print(f"queued: {counts.queued}", file=out)
    print(f"in flight: {counts.in_flight}", file=out)
    print(f"failed: {counts.failed}", file=out)
    if queue.counts_delay:
        print(f"(the counts may lag by up to {queue.counts_delay:g} s)", file=out)
    if failures:
        print("failed jobs:", file=out)
    for failed in failures:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(failed.failed_at))
        reason = " ".join(failed.reason.split())
        print(f"  {failed.job_id}: {reason} ({failed.tries} tries, {when})", file=out)
    if counts.failed > len(failures):
        print(f"  ... and {counts.failed - len(failures)} more", file=out)
