"""One contract every JobQueue passes: the in-memory queue of the service tests
(tests/support/fakes.py), Redis Streams on a real redis-server, and SQS on moto's server.

Each test has a queue of its own (a Redis stream, an SQS queue) on the session's daemon.
A lease is LEASE seconds (SQS counts in whole seconds); waits for a job to come back are
waits for the job, bounded only against a hang."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.fakes import MemoryQueue
from tests.support.moto import REGION, MotoServer, use_moto_credentials
from tests.support.redis import RedisServer
from tileserver.adapters.redis_queue import RedisQueue
from tileserver.adapters.sqs_queue import SqsQueue
from tileserver.config import RedisConfig, SqsConfig
from tileserver.errors import QueueUnavailable
from tileserver.jobs import Delivery, Job, QueueCounts, encode_job
from tileserver.protocols import JobQueue
from tileserver.selection import MetatileRef

LEASE = 2  # seconds a received job stays hidden
MAX_TRIES = 3
HANG = 60.0  # seconds: bounds a wait that should end far sooner


def job(number: int) -> tuple[str, str]:
    """(id, body) of a job of layer `l`: the number-th 8x8 metatile of row 0 at level 10."""
    made = Job("l", "tiles", MetatileRef(10, 0, 8 * number), 8)
    return made.id, encode_job(made)


# SQS cannot tell a late worker that its job was taken over: "with standard queues, an old
# receipt handle may still work" (AWS's knowledge center, on receipt handle errors); moto
# accepts it too. At least once is kept anyway: the new holder finishes the job.
TELLS_A_TAKEOVER = {"memory", "redis"}


@dataclass
class Queues:
    """The backend's name, a queue, and how to open another handle on the same queue
    (another worker, in another process)."""

    kind: str
    queue: JobQueue
    open: Callable[[], Awaitable[JobQueue]]


@pytest.fixture(params=["memory", "redis", "sqs"])
async def queues(request: pytest.FixtureRequest, aws_env: None) -> AsyncIterator[Queues]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    opened: list[JobQueue] = []
    if request.param == "memory":
        memory = MemoryQueue(lease=LEASE, max_tries=MAX_TRIES)

        async def open_queue() -> JobQueue:
            return memory  # one process: the same queue object

    else:
        if request.param == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            redis_config = RedisConfig(
                url=server.url, stream=name, claim_timeout=LEASE, max_tries=MAX_TRIES
            )

            def make() -> JobQueue:
                return RedisQueue(redis_config)

        else:
            moto: MotoServer = request.getfixturevalue("moto_server")
            sqs_config = SqsConfig(
                queue=name, errors_queue=f"{name}-errors", region=REGION,
                endpoint_url=moto.endpoint_url, visibility_timeout=LEASE,
                max_tries=MAX_TRIES, counts_delay=0,
            )  # fmt: skip

            def make() -> JobQueue:
                return SqsQueue(sqs_config)

        async def open_queue() -> JobQueue:
            queue = make()
            await queue.open(create=True)
            opened.append(queue)
            return queue

    first = await open_queue()
    yield Queues(request.param, first, open_queue)
    for queue in opened:
        await queue.close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    use_moto_credentials(monkeypatch)


async def receive_until(queue: JobQueue, count: int) -> list[Delivery]:
    """At least `count` deliveries, receiving until they come (a lease to run out, say)."""
    found: list[Delivery] = []
    async with asyncio.timeout(HANG):
        while len(found) < count:
            found += await queue.receive(count - len(found), wait=1)
    return found


# --- the contract ----------------------------------------------------------------------------


async def test_put_jobs_are_received_once_each_then_acknowledged(
    queues: Queues,
) -> None:
    queue = queues.queue
    jobs = [job(number) for number in range(3)]
    assert await queue.put(jobs) == 3
    assert await queue.counts() == QueueCounts(3, 0, 0)
    deliveries = await receive_until(queue, 3)
    assert sorted((d.job_id, d.body, d.tries) for d in deliveries) == sorted(
        (job_id, body, 1) for job_id, body in jobs
    )
    assert await queue.counts() == QueueCounts(0, 3, 0)
    assert await queue.receive(3, wait=0) == []  # each job is with one worker only
    for delivery in deliveries:
        await queue.ack(delivery)
    assert await queue.counts() == QueueCounts(0, 0, 0)
    assert await queue.receive(3, wait=0) == []


async def test_receive_hands_out_at_most_count_jobs(queues: Queues) -> None:
    queue = queues.queue
    await queue.put([job(number) for number in range(5)])
    first = await receive_until(queue, 2)
    assert len(first) == 2
    rest = await receive_until(queue, 3)
    assert len({d.job_id for d in first + rest}) == 5


async def test_a_job_not_acknowledged_within_the_lease_comes_back_with_its_tries(
    queues: Queues,
) -> None:
    queue, open_queue = queues.queue, queues.open
    await queue.put([job(1)])
    [dead] = await receive_until(queue, 1)  # the worker that received it dies
    other = await open_queue()
    started = time.monotonic()
    [again] = await receive_until(other, 1)
    assert time.monotonic() - started >= LEASE - 1.0  # not before the lease (SQS: seconds)
    assert (again.job_id, again.body, again.tries) == (dead.job_id, dead.body, 2)
    await other.ack(again)
    assert await other.counts() == QueueCounts(0, 0, 0)


async def test_extend_keeps_a_job_beyond_its_lease(queues: Queues) -> None:
    queue, open_queue = queues.queue, queues.open
    await queue.put([job(1)])
    [delivery] = await receive_until(queue, 1)
    received = time.monotonic()
    other = await open_queue()
    await asyncio.sleep(LEASE / 2)
    assert await queue.extend(delivery) is True
    # Past the first lease, within the renewed one: still hidden from the other worker.
    await asyncio.sleep(received + LEASE + 0.2 - time.monotonic())
    assert await other.receive(1, wait=0) == []
    assert (await other.counts()).in_flight == 1
    await queue.ack(delivery)
    assert await other.counts() == QueueCounts(0, 0, 0)


async def test_a_late_worker_cannot_keep_a_job_another_took_over(
    queues: Queues,
) -> None:
    queue, open_queue = queues.queue, queues.open
    await queue.put([job(1)])
    [late] = await receive_until(queue, 1)
    other = await open_queue()
    [taken] = await receive_until(other, 1)  # after the lease ran out
    assert taken.tries == 2
    late_extend = await queue.extend(late)
    if queues.kind in TELLS_A_TAKEOVER:
        assert late_extend is False
    assert await other.extend(taken) is True
    await other.ack(taken)
    assert await other.counts() == QueueCounts(0, 0, 0)
    assert await other.receive(1, wait=0) == []  # done once, by its new holder


async def test_retry_delivers_the_job_again_after_the_delay(
    queues: Queues,
) -> None:
    queue = queues.queue
    await queue.put([job(1)])
    [delivery] = await receive_until(queue, 1)
    await queue.retry(delivery, 0)
    [again] = await receive_until(queue, 1)
    assert (again.job_id, again.tries) == (delivery.job_id, 2)
    await queue.ack(again)
    assert await queue.counts() == QueueCounts(0, 0, 0)


async def test_fail_puts_the_job_in_the_error_list_with_its_reason(
    queues: Queues,
) -> None:
    queue = queues.queue
    await queue.put([job(1), job(2)])
    deliveries = await receive_until(queue, 2)
    failing = next(d for d in deliveries if d.job_id == job(1)[0])
    before = time.time()
    await queue.fail(failing, "RenderError: no data\nsecond line")
    assert await queue.counts() == QueueCounts(0, 1, 1)
    [failed] = await queue.failures(10)
    assert (failed.job_id, failed.body, failed.tries) == (failing.job_id, failing.body, 1)
    assert failed.reason == "RenderError: no data\nsecond line"
    assert before - 1 <= failed.failed_at <= time.time() + 1
    assert await queue.failures(10) == [failed]  # reading the list leaves it as it was
    for delivery in deliveries:
        if delivery is not failing:
            await queue.ack(delivery)
    assert await queue.receive(2, wait=0) == []  # never delivered again
    assert await queue.counts() == QueueCounts(0, 0, 1)


async def test_counts_and_failures_of_an_empty_queue(queues: Queues) -> None:
    queue = queues.queue
    assert await queue.counts() == QueueCounts(0, 0, 0)
    assert await queue.failures(10) == []
    assert await queue.receive(1, wait=0) == []
    assert queue.name
    assert queue.lease == LEASE
    assert queue.max_tries == MAX_TRIES
    assert queue.counts_delay == 0


async def test_more_jobs_than_one_batch(queues: Queues) -> None:
    """More jobs than one batch of SQS (10 a request) or of the Redis script (200)."""
    queue = queues.queue
    count = 210 if queues.kind == "redis" else 25
    jobs = [job(number) for number in range(count)]
    assert await queue.put(jobs) == count
    assert await queue.counts() == QueueCounts(count, 0, 0)
    done: set[str] = set()
    async with asyncio.timeout(HANG):
        while len(done) < count:
            for delivery in await queue.receive(10, wait=1):
                await queue.ack(delivery)
                done.add(delivery.job_id)
    assert done == {job_id for job_id, _ in jobs}
    assert await queue.counts() == QueueCounts(0, 0, 0)


# --- the real queues' failures -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "sqs"])
async def test_a_queue_that_cannot_be_reached_raises_queue_unavailable(
    kind: str, closed_port: int, aws_env: None
) -> None:
    queue: Any
    if kind == "redis":
        queue = RedisQueue(RedisConfig(url=f"redis://127.0.0.1:{closed_port}", timeout=2))
    else:
        queue = SqsQueue(
            SqsConfig(queue="q", errors_queue="q-errors", region=REGION,
                      endpoint_url=f"http://127.0.0.1:{closed_port}")
        )  # fmt: skip
    with pytest.raises(QueueUnavailable) as raised:
        async with asyncio.timeout(HANG):
            await queue.open(create=True)
    assert str(closed_port) in str(raised.value)
    await queue.close()
