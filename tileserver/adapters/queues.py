"""Builds the job queue and the end notifiers of distributed generation a configuration
describes (`sqs` or `redis`, and `sns`)."""

from __future__ import annotations

from tileserver.config import Config
from tileserver.protocols import JobQueue, Notifier


def queue_for(config: Config) -> JobQueue | None:
    """The queue of `generation.queue` (else of the one `sqs` or `redis` section); None
    without either."""
    if config.queue == "sqs" and config.sqs is not None:
        from tileserver.adapters.sqs_queue import SqsQueue

        return SqsQueue(config.sqs)
    if config.queue == "redis" and config.redis is not None:
        from tileserver.adapters.redis_queue import RedisQueue

        return RedisQueue(config.redis)
    return None


def notifiers_for(config: Config, queue: JobQueue) -> list[Notifier]:
    """Who hears of the end of a generation: the `sns` topic, and the Redis queue's channel."""
    notifiers: list[Notifier] = []
    if config.sns is not None:
        from tileserver.adapters.sns_notifier import SnsNotifier

        notifiers.append(SnsNotifier(config.sns))
    from tileserver.adapters.redis_queue import RedisQueue

    if isinstance(queue, RedisQueue):
        notifiers.append(queue)
    return notifiers
