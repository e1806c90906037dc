"""Consistent hashing of keys over several servers (ketama-style points on a ring)."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

_POINTS_PER_NODE = 160


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode(), usedforsecurity=False).digest()[:8], "big")


class HashRing(Generic[T]):
    """Maps keys to nodes so that adding or removing a node moves only ~1/N of the keys."""

    def __init__(self, nodes: Sequence[tuple[str, T]]) -> None:
        if not nodes:
            raise ValueError("a hash ring needs at least one node")
        points: list[tuple[int, int]] = []
        for index, (name, _node) in enumerate(nodes):
            for i in range(_POINTS_PER_NODE):
                points.append((_hash(f"{name}-{i}"), index))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]
        self._nodes = [node for _, node in nodes]

    @property
    def nodes(self) -> list[T]:
        return list(self._nodes)

    def node_for(self, key: str) -> T:
        if len(self._nodes) == 1:
            return self._nodes[0]
        i = bisect.bisect(self._hashes, _hash(key)) % len(self._hashes)
        return self._nodes[self._owners[i]]
