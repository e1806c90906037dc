"""The job queue of distributed generation in Amazon SQS (or an SQS-compatible server at
`sqs.endpoint_url`), over aiobotocore.

Two standard queues: `sqs.queue` holds the jobs, `sqs.errors_queue` the jobs that failed
`max_tries` times, each as a message with the job, its reason, its tries and the time
(`tileserver.jobs.encode_failure`), kept 14 days. A worker receives jobs with a visibility
timeout of `sqs.visibility_timeout` and renews it while a job runs; a job whose worker
died becomes visible again and is received by another worker, SQS counting the receives
(ApproximateReceiveCount: the job's tries).

SQS keeps no index of its messages, so enqueueing the same selection twice enqueues its
jobs twice: the second copy rewrites the same tiles (writes are idempotent) at the cost of
renders. Its counts are approximate: on AWS they lag by up to a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from tileserver.config import SqsConfig
from tileserver.errors import QueueUnavailable
from tileserver.jobs import (
    Delivery,
    FailedJob,
    QueueCounts,
    decode_failure,
    encode_failure,
    job_id_of,
)

_BATCH = 10  # messages per SendMessageBatch / ReceiveMessage, SQS's maximum
_MAX_WAIT = 20  # seconds of a long poll, SQS's maximum
_NO_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_ERRORS_RETENTION = 14 * 24 * 3600  # seconds, SQS's maximum
_LISTING_VISIBILITY = 30  # seconds the error messages are hidden while `failures` reads them


class SqsQueue:
    """Jobs in an SQS queue; see the module docstring."""

    def __init__(self, config: SqsConfig) -> None:
        self.config = config
        self.lease = float(config.visibility_timeout)
        self.max_tries = config.max_tries
        self.counts_delay = config.counts_delay
        where = f" at {config.endpoint_url}" if config.endpoint_url else ""
        self.name = f"SQS queue {config.queue} ({config.region}{where})"
        self._config = AioConfig(
            connect_timeout=5,
            read_timeout=_MAX_WAIT + 10,  # longer than a long poll
            retries={"total_max_attempts": 3, "mode": "standard"},
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._url = ""
        self._errors_url = ""

    def __repr__(self) -> str:
        return f"SqsQueue({self.name!r})"

    @asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """One request; its failures become QueueUnavailable naming the queue."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "?")
            if code in _NO_QUEUE:
                reason = "the queue does not exist: `generate_tiles --role master` creates it"
            else:
                reason = f"{code} {error.get('Message', '')}".strip()
            raise QueueUnavailable(f"{self.name}: {what}: {reason}") from exc
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise QueueUnavailable(f"{self.name}: {what}: {exc or type(exc).__name__}") from exc

    async def open(self, create: bool = False) -> None:
        """Connects and finds both queues; with `create`, makes them when missing."""
        if self._client is not None:
            return
        stack = AsyncExitStack()
        try:
            async with self._guard("connect"):
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        "sqs",
                        region_name=self.config.region,
                        endpoint_url=self.config.endpoint_url or None,
                        config=self._config,
                    )
                )
            self._stack = stack
            self._url = await self._queue_url(
                self.config.queue,
                create,
                {"VisibilityTimeout": str(self.config.visibility_timeout)},
            )
            self._errors_url = await self._queue_url(
                self.config.errors_queue, create, {"MessageRetentionPeriod": str(_ERRORS_RETENTION)}
            )
        except BaseException:
            self._stack = None
            self._client = None
            await stack.aclose()
            raise

    async def _queue_url(self, name: str, create: bool, attributes: dict[str, str]) -> str:
        try:
            async with self._guard(f"find queue {name}"):
                answer = await self._client.get_queue_url(QueueName=name)
                return str(answer["QueueUrl"])
        except QueueUnavailable as exc:
            cause = exc.__cause__
            missing = isinstance(cause, ClientError) and (
                cause.response.get("Error", {}).get("Code") in _NO_QUEUE
            )
            if not (create and missing):
                raise
        async with self._guard(f"create queue {name}"):
            answer = await self._client.create_queue(QueueName=name, Attributes=attributes)
            return str(answer["QueueUrl"])

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()
            await asyncio.sleep(0)  # let aiohttp's transports close before the loop may stop

    # --- the master ------------------------------------------------------------------

    async def put(self, messages: Sequence[tuple[str, str]]) -> int:
        for start in range(0, len(messages), _BATCH):
            batch = messages[start : start + _BATCH]
            entries = [{"Id": str(i), "MessageBody": body} for i, (_, body) in enumerate(batch)]
            async with self._guard(f"send jobs ({batch[0][0]}...)"):
                answer = await self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
            failed = answer.get("Failed") or ()
            if failed:
                first = failed[0]
                raise QueueUnavailable(
                    f"{self.name}: send job {batch[int(first.get('Id', 0))][0]}: "
                    f"{first.get('Code', '?')} {first.get('Message', '')}".strip()
                )
        return len(messages)

    # --- the workers -----------------------------------------------------------------

    async def receive(self, count: int, wait: float) -> list[Delivery]:
        async with self._guard("receive jobs"):
            answer = await self._client.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=max(1, min(count, _BATCH)),
                WaitTimeSeconds=max(0, min(_MAX_WAIT, int(wait))),
                VisibilityTimeout=self.config.visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        deliveries = []
        for message in answer.get("Messages") or ():
            body = str(message.get("Body", ""))
            tries = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
            deliveries.append(Delivery(message["ReceiptHandle"], job_id_of(body), body, tries))
        return deliveries

    async def _hide(self, delivery: Delivery, seconds: int, what: str) -> None:
        async with self._guard(f"{what} job {delivery.job_id}"):
            await self._client.change_message_visibility(
                QueueUrl=self._url, ReceiptHandle=delivery.receipt, VisibilityTimeout=seconds
            )

    async def extend(self, delivery: Delivery) -> bool:
        try:
            await self._hide(delivery, self.config.visibility_timeout, "renew the visibility of")
        except QueueUnavailable as exc:
            # A receipt handle outdated by another receive: the job is another worker's now.
            cause = exc.__cause__
            if isinstance(cause, ClientError) and "ReceiptHandle" in str(
                cause.response.get("Error", {}).get("Code", "")
            ):
                return False
            raise
        return True

    async def ack(self, delivery: Delivery) -> None:
        async with self._guard(f"delete job {delivery.job_id}"):
            await self._client.delete_message(QueueUrl=self._url, ReceiptHandle=delivery.receipt)

    async def retry(self, delivery: Delivery, delay: float) -> None:
        await self._hide(delivery, max(0, min(43200, round(delay))), "release")

    async def fail(self, delivery: Delivery, reason: str) -> None:
        record = encode_failure(
            FailedJob(delivery.job_id, delivery.body, reason, delivery.tries, time.time())
        )
        async with self._guard(f"send job {delivery.job_id} to {self.config.errors_queue}"):
            await self._client.send_message(QueueUrl=self._errors_url, MessageBody=record)
        await self.ack(delivery)

    # --- status ----------------------------------------------------------------------

    async def _attributes(self, url: str, name: str) -> dict[str, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]  # fmt: skip
        async with self._guard(f"count the messages of {name}"):
            answer = await self._client.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        found = answer.get("Attributes", {})
        return {key: int(found.get(key, 0)) for key in names}

    async def counts(self) -> QueueCounts:
        jobs, errors = await asyncio.gather(
            self._attributes(self._url, self.config.queue),
            self._attributes(self._errors_url, self.config.errors_queue),
        )
        return QueueCounts(
            queued=jobs["ApproximateNumberOfMessages"] + jobs["ApproximateNumberOfMessagesDelayed"],
            in_flight=jobs["ApproximateNumberOfMessagesNotVisible"],
            failed=sum(errors.values()),
        )

    async def failures(self, limit: int) -> list[FailedJob]:
        """Reads the error queue's messages and makes them visible again at once (hidden
        meanwhile, so that each receive brings new ones)."""
        found: dict[str, tuple[str, str]] = {}  # MessageId -> (receipt handle, body)
        try:
            while len(found) < limit:
                async with self._guard(f"read {self.config.errors_queue}"):
                    answer = await self._client.receive_message(
                        QueueUrl=self._errors_url,
                        MaxNumberOfMessages=min(_BATCH, limit - len(found)),
                        VisibilityTimeout=_LISTING_VISIBILITY,
                        WaitTimeSeconds=0,
                    )
                messages = answer.get("Messages") or ()
                if not messages:
                    break
                for message in messages:
                    found[message["MessageId"]] = (message["ReceiptHandle"], message["Body"])
        finally:
            receipts = [receipt for receipt, _ in found.values()]
            for start in range(0, len(receipts), _BATCH):
                entries = [
                    {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": 0}
                    for i, receipt in enumerate(receipts[start : start + _BATCH])
                ]
                async with self._guard(f"release the messages of {self.config.errors_queue}"):
                    await self._client.change_message_visibility_batch(
                        QueueUrl=self._errors_url, Entries=entries
                    )
        return sorted((decode_failure(body) for _, body in found.values()),
                      key=lambda f: f.failed_at)  # fmt: skip
