"""The end of a distributed generation, told on an Amazon SNS topic (TileCloud-chain's `sns`
section), over aiobotocore: subscribers (e-mail, an SQS queue, a Lambda) learn that the
tiles are all there."""

from __future__ import annotations

import asyncio

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from tileserver.config import SnsConfig
from tileserver.errors import QueueUnavailable

_SUBJECT_LENGTH = 100  # SNS's limit


class SnsNotifier:
    """Publishes on `sns.topic`; one client per message (a generation ends once)."""

    def __init__(self, config: SnsConfig) -> None:
        self.config = config
        self.name = f"SNS topic {config.topic}"
        self._config = AioConfig(
            connect_timeout=5,
            read_timeout=10,
            retries={"total_max_attempts": 3, "mode": "standard"},
        )

    async def publish(self, subject: str, message: str) -> None:
        try:
            async with get_session().create_client(
                "sns",
                region_name=self.config.region,
                endpoint_url=self.config.endpoint_url or None,
                config=self._config,
            ) as client:
                await client.publish(
                    TopicArn=self.config.topic,
                    Subject=subject[:_SUBJECT_LENGTH],
                    Message=message,
                )
            await asyncio.sleep(0)  # let aiohttp's transports close before the loop may stop
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', '?')} {error.get('Message', '')}".strip()
            raise QueueUnavailable(f"{self.name}: publish: {reason}") from exc
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise QueueUnavailable(f"{self.name}: publish: {exc or type(exc).__name__}") from exc
