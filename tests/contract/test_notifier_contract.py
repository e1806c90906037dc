"""One contract every Notifier passes: an SNS topic (moto's server, read through an SQS
queue subscribed to it) and the Redis queue's channel (a real redis-server, read by a
subscriber): what is published arrives once, whole, and an unreachable service is a
QueueUnavailable naming it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests.support.moto import REGION, MotoServer, use_moto_credentials
from tests.support.redis import RedisServer
from tests.support.waiting import async_wait_until
from tileserver.adapters.redis_queue import RedisQueue
from tileserver.adapters.sns_notifier import SnsNotifier
from tileserver.config import RedisConfig, SnsConfig
from tileserver.errors import QueueUnavailable
from tileserver.protocols import Notifier

SUBJECT = "tileserver: generation finished (osm, 36 jobs)"
MESSAGE = "finished: 36 jobs, 0 failed\nlayers: osm — Monaco « port »\n"


@dataclass
class Channel:
    """A notifier and what its subscribers received: (subject, message) pairs."""

    notifier: Notifier
    received: Callable[[], Awaitable[list[tuple[str, str]]]]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    use_moto_credentials(monkeypatch)


@pytest.fixture(params=["sns", "redis"])
async def channel(request: pytest.FixtureRequest, aws_env: None) -> AsyncIterator[Channel]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    if request.param == "sns":
        moto: MotoServer = request.getfixturevalue("moto_server")
        topic, queue_url = moto.topic_to_queue(name, f"{name}-listener")
        notifier = SnsNotifier(SnsConfig(topic=topic, region=REGION,
                                         endpoint_url=moto.endpoint_url))  # fmt: skip

        async def from_sns() -> list[tuple[str, str]]:
            notes = await asyncio.to_thread(moto.notifications, queue_url)
            return [(note["Subject"], note["Message"]) for note in notes]

        yield Channel(notifier, from_sns)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    queue = RedisQueue(RedisConfig(url=server.url, stream=name))
    await queue.open()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    pubsub = client.pubsub()
    pubsub.subscribe(queue.channel)
    assert pubsub.get_message(timeout=30) is not None  # the subscription is confirmed
    got: list[tuple[str, str]] = []

    async def from_redis() -> list[tuple[str, str]]:
        def one() -> Any:
            return pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)

        await async_wait_until(lambda: got or _take(one(), got), "the channel's message")
        while _take(one(), got):  # and nothing more behind it
            pass
        return got

    try:
        yield Channel(queue, from_redis)
    finally:
        pubsub.close()
        client.close()
        await queue.close()


def _take(message: Any, into: list[tuple[str, str]]) -> bool:
    if message is None:
        return False
    data = json.loads(message["data"])
    into.append((data["subject"], data["message"]))
    return True


async def test_a_published_message_arrives_once_and_whole(channel: Channel) -> None:
    await channel.notifier.publish(SUBJECT, MESSAGE)
    assert await channel.received() == [(SUBJECT, MESSAGE)]


async def test_two_messages_arrive_apart(channel: Channel) -> None:
    await channel.notifier.publish("first", "one")
    await channel.notifier.publish("second", "two\nlines")
    received = await channel.received()
    if len(received) < 2:  # SNS through SQS: the second may come in a later receive
        received += await channel.received()
    assert sorted(received) == [("first", "one"), ("second", "two\nlines")]


async def test_a_long_subject_is_cut_to_what_sns_accepts(channel: Channel) -> None:
    subject = "generation finished: " + "x" * 200
    await channel.notifier.publish(subject, MESSAGE)
    [(received_subject, message)] = await channel.received()
    assert (subject.startswith(received_subject) and len(received_subject) <= 100) or (
        received_subject == subject
    )
    assert message == MESSAGE
    assert channel.notifier.name


@pytest.mark.parametrize("kind", ["sns", "redis"])
async def test_an_unreachable_service_is_queue_unavailable_naming_it(
    kind: str, closed_port: int, aws_env: None
) -> None:
    notifier: Notifier
    if kind == "sns":
        topic = f"arn:aws:sns:{REGION}:123456789012:nowhere"
        notifier = SnsNotifier(
            SnsConfig(topic=topic, region=REGION, endpoint_url=f"http://127.0.0.1:{closed_port}")
        )
        with pytest.raises(QueueUnavailable, match=r"SNS topic .*nowhere: publish"):
            await notifier.publish(SUBJECT, MESSAGE)
    else:
        queue = RedisQueue(RedisConfig(url=f"redis://127.0.0.1:{closed_port}", timeout=2))
        with pytest.raises(QueueUnavailable, match=f"127.0.0.1:{closed_port}"):
            await queue.open()
