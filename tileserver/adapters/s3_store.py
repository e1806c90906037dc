"""Tile store in an S3 bucket (AWS or any S3-compatible server), over aiobotocore.

One client, opened by `open` and kept alive until `close`, carries every request; a
semaphore bounds the requests in flight to the size of its connection pool. Timeouts are
short and retries few, so a dead endpoint fails in about a second instead of hanging a
tile request. Credentials come from botocore's usual chain (environment, profile, instance
role). A missing object is None; every other failure is raised as `StoreUnavailable`
(one request's: an error answer, or an answer that stopped coming, botocore's read
timeout; generation tries its metatile again), or as `StoreOutage` (what every request
would get: the run stops) when the endpoint cannot be reached or connected to in time,
gives no answer within the request's whole time limit, or refuses the bucket or the
credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from tileserver.adapters.aiohttp_quirks import absorb_orphaned_writes
from tileserver.errors import StoreOutage, StoreUnavailable
from tileserver.store_layout import check_path, check_prefix
from tileserver.types import StoredTile

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
# Answers every request to the bucket would get, not one key's: a StoreOutage.
_OUTAGE_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "AllAccessDisabled", "AccountProblem", "ServiceUnavailable"}  # fmt: skip
# The endpoint cannot be reached at all (or not signed for): a StoreOutage too.
_UNREACHABLE = (BotoConnectionError, NoCredentialsError, aiohttp.ClientConnectorError,
                ConnectionRefusedError)  # fmt: skip
_DELETE_BATCH = 1000  # keys per DeleteObjects request, S3's maximum


class S3Store:
    """Tiles in `bucket` under the key prefix `folder`."""

    def __init__(
        self,
        bucket: str,
        folder: str = "",
        *,
        endpoint_url: str = "",
        region: str = "",
        cache_control: str = "",
        concurrency: int = 32,
        connect_timeout: float = 1.0,
        read_timeout: float = 2.0,
        max_attempts: int = 2,
    ) -> None:
        self.bucket = bucket
        self.folder = f"{folder.strip('/')}/" if folder.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.cache_control = cache_control
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=concurrency,
            # S3-compatible servers are usually addressed by path, and not all of them
            # accept the CRC checksums botocore >= 1.36 adds to every upload by default.
            s3={"addressing_style": "path"} if endpoint_url else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A hard bound on one request, retries included, whatever the server does.
        self._request_timeout = max_attempts * (connect_timeout + read_timeout) + 1.0
        self._limit = asyncio.Semaphore(concurrency)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Store({self.where!r})"

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.folder}"

    async def open(self) -> None:
        if self._client is not None:
            return
        absorb_orphaned_writes()
        stack = AsyncExitStack()
        try:
            async with self._guard("connect", ""):
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        region_name=self.region or None,
                        endpoint_url=self.endpoint_url or None,
                        config=self._config,
                    )
                )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()
            # aiohttp closes its transports without waiting; let their callbacks run
            # before the loop may stop.
            await asyncio.sleep(0)

    def _key(self, path: str) -> str:
        return self.folder + check_path(path)

    @asynccontextmanager
    async def _guard(self, what: str, path: str) -> AsyncIterator[None]:
        """One request: bounded in number and in time; its failures become StoreUnavailable."""
        if what != "connect" and self._client is None:
            raise RuntimeError(f"{self!r} used before open() or after close()")
        where = f"{self.where}: {what} {path!r}" if path else f"{self.where}: {what}"
        try:
            async with self._limit, asyncio.timeout(self._request_timeout):
                yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', '?')} {error.get('Message', '')}".strip()
            failure = StoreOutage if _code(exc) in _OUTAGE_CODES else StoreUnavailable
            raise failure(f"{where}: {reason}") from exc
        except TimeoutError as exc:
            raise StoreOutage(f"{where}: no answer in {self._request_timeout:g} s") from exc
        except _UNREACHABLE as exc:
            raise StoreOutage(f"{where}: {exc or type(exc).__name__}") from exc
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(f"{where}: {exc or type(exc).__name__}") from exc

    # --- reads ------------------------------------------------------------------------

    async def get(self, path: str) -> bytes | None:
        stored = await self.get_stored(path)
        return None if stored is None else stored.data

    async def get_stored(self, path: str) -> StoredTile | None:
        key = self._key(path)
        async with self._guard("get", path):
            try:
                response = await self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return None
                raise
            async with response["Body"] as body:
                data: bytes = await body.read()
            # The object's time, from the same answer (botocore parses the header).
            modified = response.get("LastModified")
            stamp = modified.timestamp() if isinstance(modified, datetime) else None
            return StoredTile(data, stamp)

    async def exists(self, path: str) -> bool:
        key = self._key(path)
        async with self._guard("head", path):
            try:
                await self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return False
                raise
            return True

    async def list_paths(self, prefix: str) -> AsyncIterator[str]:
        check_prefix(prefix)
        arguments = {"Bucket": self.bucket, "Prefix": self.folder + prefix}
        while True:
            async with self._guard("list", prefix):
                page = await self._client.list_objects_v2(**arguments)
            for item in page.get("Contents", ()):
                yield item["Key"][len(self.folder) :]
            if not page.get("IsTruncated"):
                return
            arguments["ContinuationToken"] = page["NextContinuationToken"]

    # --- writes -----------------------------------------------------------------------

    async def put_many(self, items: Mapping[str, bytes], content_type: str) -> None:
        keys = {path: self._key(path) for path in items}  # every path checked first
        try:
            async with asyncio.TaskGroup() as group:
                for path, data in items.items():
                    group.create_task(self._put(path, keys[path], data, content_type))
        except* StoreUnavailable as failures:
            raise failures.exceptions[0] from failures.exceptions[0].__cause__

    async def _put(self, path: str, key: str, data: bytes, content_type: str) -> None:
        extra = {"CacheControl": self.cache_control} if self.cache_control else {}
        async with self._guard("put", path):
            await self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **extra
            )

    async def delete_many(self, paths: Iterable[str]) -> None:
        keys = [self._key(path) for path in paths]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            async with self._guard("delete", batch[0][len(self.folder) :]):
                response = await self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            # Deleting a missing key is a success in S3; anything reported here is not.
            errors = response.get("Errors", ())
            if errors:
                first = errors[0]
                raise StoreUnavailable(
                    f"{self.where}: delete {first.get('Key', '?')!r}: "
                    f"{first.get('Code', '?')} {first.get('Message', '')}".strip()
                )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
