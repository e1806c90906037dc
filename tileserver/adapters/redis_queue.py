"""The job queue of distributed generation in Redis (>= 6.2): a stream read by a consumer
group, over redis.asyncio.

Keys, all named after `redis.stream` (S below):

- `S`, the stream: one entry per job (`id` and `job` fields), read by the group
  `redis.group`. An entry leaves the stream when its job is done or failed for good, so
  the stream holds exactly the jobs queued or in flight.
- `S:ids`, a set of the job ids in the stream: the master adds a job only when its id is
  absent, so running the master again does not double the jobs still queued.
- `S:errors`, a hash of the jobs that failed `max_tries` times: job id -> JSON with the
  job, the reason, the tries and the time (`tileserver.jobs.encode_failure`).
- `S:end`, a channel: the message published when a generation is finished.

A worker reads new entries with XREADGROUP; an entry one worker received and did not
acknowledge within `claim_timeout` seconds (it died, or hangs) is taken over by the
next worker with XAUTOCLAIM, and its delivery count goes up. A worker renews its claim
while a job runs (XCLAIM of its own entry), so a long render is not taken over.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions

from tileserver.config import RedisConfig
from tileserver.errors import QueueUnavailable
from tileserver.jobs import Delivery, FailedJob, QueueCounts, decode_failure, encode_failure

_PUT_BATCH = 200  # jobs per script call of `put`

# KEYS: stream, ids, errors; ARGV: id1, body1, id2, body2...
_PUT = """
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'job', ARGV[i + 1])
    redis.call('HDEL', KEYS[3], ARGV[i])
    added = added + 1
  end
end
return added
"""

# KEYS: stream; ARGV: group, consumer, entry id, idle ms. Resets the idle time of an
# entry this consumer still owns (JUSTID: without counting a delivery); 0 when it is
# another consumer's now.
_RECLAIM = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""


def _where(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=f"{user}{host}{port}").geturl()


class RedisQueue:
    """Jobs in a Redis stream; see the module docstring. Also a Notifier (the `S:end`
    channel)."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.stream = config.stream
        self.group = config.group
        self.lease = config.claim_timeout
        self.max_tries = config.max_tries
        self.counts_delay = 0.0  # XLEN and XPENDING in one transaction: exact
        self.name = f"{_where(config.url)} stream {config.stream}"
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._client: Any = None
        self._put: Any = None
        self._reclaim: Any = None
        self._received = False

    def __repr__(self) -> str:
        return f"RedisQueue({self.name!r})"

    @property
    def _ids(self) -> str:
        return f"{self.stream}:ids"

    @property
    def _errors(self) -> str:
        return f"{self.stream}:errors"

    @property
    def channel(self) -> str:
        return f"{self.stream}:end"

    @asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """One exchange with Redis; its failures become QueueUnavailable naming the server."""
        if self._client is None:
            raise RuntimeError(f"{self!r} used before open() or after close()")
        try:
            yield
        except redis.exceptions.ResponseError as exc:
            raise QueueUnavailable(f"redis {self.name}: {what}: {exc}") from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise QueueUnavailable(f"redis {self.name}: {what}: {reason}") from exc

    async def open(self, create: bool = False) -> None:
        """Connects and makes the stream and its consumer group when missing (whatever
        `create` says: both are free)."""
        if self._client is not None:
            return
        timeout = self.config.timeout
        try:
            self._client = redis.asyncio.from_url(
                self.config.url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                decode_responses=True,
            )
        except ValueError as exc:  # a URL redis-py cannot use
            raise QueueUnavailable(f"redis.url {_where(self.config.url)}: {exc}") from exc
        self._put = self._client.register_script(_PUT)
        self._reclaim = self._client.register_script(_RECLAIM)
        try:
            async with self._guard("connect"):
                await self._client.ping()
                try:
                    await self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
                except redis.exceptions.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):  # the group is there: fine
                        raise
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is None:
            return
        client, self._client = self._client, None
        try:
            if self._received:
                # A consumer without pending jobs leaves the group: no list of dead
                # consumers grows there, one per worker process that ever ran.
                pending = await client.xpending_range(
                    self.stream, self.group, "-", "+", 1, consumername=self.consumer
                )
                if not pending:
                    await client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except (redis.exceptions.RedisError, OSError):
            pass  # closing anyway; a leftover consumer entry is harmless
        finally:
            await client.aclose()

    # --- the master ------------------------------------------------------------------

    async def put(self, messages: Sequence[tuple[str, str]]) -> int:
        added = 0
        for start in range(0, len(messages), _PUT_BATCH):
            batch = messages[start : start + _PUT_BATCH]
            args = [part for pair in batch for part in pair]
            async with self._guard("add jobs"):
                added += int(
                    await self._put(keys=[self.stream, self._ids, self._errors], args=args)
                )
        return added

    # --- the workers -----------------------------------------------------------------

    async def receive(self, count: int, wait: float) -> list[Delivery]:
        self._received = True
        deliveries: list[Delivery] = []
        lease_ms = max(1, round(self.lease * 1000))
        async with self._guard("claim stale jobs"):
            _, entries, *_ = await self._client.xautoclaim(
                self.stream, self.group, self.consumer, lease_ms, "0-0", count=count
            )
            entries = [(entry_id, fields) for entry_id, fields in entries if fields]
            if entries:
                async with self._client.pipeline(transaction=False) as pipe:
                    for entry_id, _ in entries:
                        pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
                    pending = await pipe.execute()
                for (entry_id, fields), info in zip(entries, pending, strict=True):
                    tries = int(info[0]["times_delivered"]) if info else 2
                    deliveries.append(self._delivery(entry_id, fields, tries))
        if len(deliveries) >= count:
            return deliveries
        # Redis answers a blocked read within the socket timeout, then we ask again.
        block = min(wait, self.config.timeout * 0.8) if not deliveries else 0
        async with self._guard("read jobs"):
            answer = await self._client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=count - len(deliveries),
                block=round(block * 1000) if block > 0 else None,
            )
        for _, stream_entries in answer or ():
            for entry_id, fields in stream_entries:
                if fields:
                    deliveries.append(self._delivery(entry_id, fields, 1))
        return deliveries

    @staticmethod
    def _delivery(entry_id: str, fields: dict[str, str], tries: int) -> Delivery:
        return Delivery(entry_id, fields.get("id", "?"), fields.get("job", ""), tries)

    async def extend(self, delivery: Delivery) -> bool:
        async with self._guard(f"renew the claim of job {delivery.job_id}"):
            args = [self.group, self.consumer, delivery.receipt, 0]
            return bool(await self._reclaim(keys=[self.stream], args=args))

    async def ack(self, delivery: Delivery) -> None:
        async with (
            self._guard(f"acknowledge job {delivery.job_id}"),
            self._client.pipeline(transaction=True) as pipe,
        ):
            pipe.xack(self.stream, self.group, delivery.receipt)
            pipe.xdel(self.stream, delivery.receipt)
            pipe.srem(self._ids, delivery.job_id)
            await pipe.execute()

    async def retry(self, delivery: Delivery, delay: float) -> None:
        # Made look idle for lease - delay: the next XAUTOCLAIM after `delay` takes it.
        idle = max(0, round((self.lease - delay) * 1000))
        async with self._guard(f"release job {delivery.job_id}"):
            await self._reclaim(
                keys=[self.stream], args=[self.group, self.consumer, delivery.receipt, idle]
            )

    async def fail(self, delivery: Delivery, reason: str) -> None:
        record = encode_failure(
            FailedJob(delivery.job_id, delivery.body, reason, delivery.tries, time.time())
        )
        async with (
            self._guard(f"move job {delivery.job_id} to the error list"),
            self._client.pipeline(transaction=True) as pipe,
        ):
            pipe.hset(self._errors, delivery.job_id, record)
            pipe.xack(self.stream, self.group, delivery.receipt)
            pipe.xdel(self.stream, delivery.receipt)
            pipe.srem(self._ids, delivery.job_id)
            await pipe.execute()

    # --- status ----------------------------------------------------------------------

    async def counts(self) -> QueueCounts:
        async with self._guard("count jobs"), self._client.pipeline(transaction=True) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, self.group)
            pipe.hlen(self._errors)
            length, pending, failed = await pipe.execute()
        in_flight = int(pending["pending"])
        return QueueCounts(max(0, int(length) - in_flight), in_flight, int(failed))

    async def failures(self, limit: int) -> list[FailedJob]:
        found: list[FailedJob] = []
        async with self._guard("read the error list"):
            async for _, value in self._client.hscan_iter(self._errors, count=100):
                found.append(decode_failure(value))
                if len(found) >= limit:
                    break
        return sorted(found, key=lambda f: f.failed_at)

    # --- Notifier --------------------------------------------------------------------

    async def publish(self, subject: str, message: str) -> None:
        payload = json.dumps({"subject": subject, "message": message})
        async with self._guard(f"publish on channel {self.channel}"):
            await self._client.publish(self.channel, payload)
