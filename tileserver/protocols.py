"""The small interfaces services depend on; adapters implement them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from tileserver.config import Layer
from tileserver.grid import Metatile
from tileserver.types import TileCoord


class TileCache(Protocol):
    """A key/value tile cache with expiry (Memcached, or the embedded LRU).

    Every method may raise `CacheUnavailable`; none raises anything else on purpose.
    """

    name: str

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The values found, by key; missing keys are absent from the result."""
        ...

    async def set_many(self, items: Mapping[str, bytes], ttl: int) -> None:
        """Stores every item with a TTL in seconds, in as few round trips as possible."""
        ...

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Stores only when the key is absent; True when stored (a lock was taken)."""
        ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class Renderer(Protocol):
    """Renders a metatile and cuts it into encoded tiles."""

    async def render(
        self, layer: Layer, metatile: Metatile, dimensions: Mapping[str, str]
    ) -> dict[TileCoord, bytes]: ...

    async def close(self) -> None: ...
