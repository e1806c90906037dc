"""Consistent hashing of keys over several servers (ketama-style points on a ring)."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
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

    def nodes_for(self, key: str) -> Iterator[T]:
        """Every node, once, in the order the ring meets them from the key's point: the
        key's own node first (`node_for`), then where it fails over to. Skipping dead
        nodes moves only their keys, spread over the others (each node owns many points)."""
        if len(self._nodes) == 1:
            yield self._nodes[0]
            return
        start = bisect.bisect(self._hashes, _hash(key))
        seen: set[int] = set()
        for step in range(len(self._hashes)):
            owner = self._owners[(start + step) % len(self._hashes)]
            if owner not in seen:
                seen.add(owner)
                yield self._nodes[owner]
                if len(seen) == len(self._nodes):
                    return
