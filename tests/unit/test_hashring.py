"""Unit tests of tileserver.hashring: consistent hashing of keys over Memcached servers."""

from __future__ import annotations

from collections import Counter

import pytest

from tileserver.hashring import HashRing

KEYS = [
    f"tileserver/osm/default/epsg3857/17/{47000 + i // 100}/{68000 + i % 100}"
    for i in range(10_000)
]


def servers(n: int) -> list[tuple[str, str]]:
    return [(f"10.0.0.{i + 1}:11211", f"node{i}") for i in range(n)]


def test_same_key_same_node_across_instances() -> None:
    first = HashRing(servers(3))
    second = HashRing(servers(3))
    assert [first.node_for(k) for k in KEYS[:500]] == [second.node_for(k) for k in KEYS[:500]]
    assert first.node_for("a") == first.node_for("a")


@pytest.mark.parametrize(
    "keys",
    [KEYS, [f"k{i}" for i in range(10_000)]],
    ids=["tile-keys", "short-keys"],
)
def test_three_nodes_share_the_keys_roughly_evenly(keys: list[str]) -> None:
    ring = HashRing(servers(3))
    counts = Counter(ring.node_for(k) for k in keys)
    assert set(counts) == {"node0", "node1", "node2"}
    for node, count in counts.items():
        assert 0.20 * len(keys) <= count <= 0.47 * len(keys), (node, count)


def test_adding_a_fourth_node_moves_only_about_a_quarter_of_the_keys() -> None:
    before = HashRing(servers(3))
    after = HashRing(servers(4))
    moved = [k for k in KEYS if before.node_for(k) != after.node_for(k)]
    assert len(moved) < 0.35 * len(KEYS)
    assert len(moved) > 0.15 * len(KEYS)  # the new node does take its share
    # Keys only move to the new node, never between the old ones.
    assert {after.node_for(k) for k in moved} == {"node3"}


def test_removing_a_node_moves_only_its_own_keys() -> None:
    before = HashRing(servers(4))
    after = HashRing(servers(3))
    for key in KEYS:
        if before.node_for(key) != "node3":
            assert after.node_for(key) == before.node_for(key)


def test_node_order_does_not_matter() -> None:
    forward = HashRing(servers(3))
    backward = HashRing(list(reversed(servers(3))))
    assert all(forward.node_for(k) == backward.node_for(k) for k in KEYS[:2000])


def test_single_node_takes_every_key() -> None:
    ring = HashRing([("127.0.0.1:11211", "only")])
    assert {ring.node_for(k) for k in KEYS[:1000]} == {"only"}
    assert ring.nodes == ["only"]


def test_nodes_lists_the_nodes_in_order() -> None:
    ring = HashRing(servers(3))
    assert ring.nodes == ["node0", "node1", "node2"]
    ring.nodes.append("intruder")
    assert ring.nodes == ["node0", "node1", "node2"]


def test_an_empty_ring_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        HashRing([])


def test_nodes_for_starts_with_the_key_node_and_lists_every_node_once() -> None:
    ring = HashRing(servers(4))
    for key in KEYS[:500]:
        order = list(ring.nodes_for(key))
        assert order[0] == ring.node_for(key)
        assert sorted(order) == ["node0", "node1", "node2", "node3"]
    assert list(HashRing(servers(1)).nodes_for("a")) == ["node0"]


def test_skipping_a_dead_node_moves_only_its_keys_and_spreads_them() -> None:
    """Failover: the first live node of nodes_for. The live nodes keep every key they had;
    the dead node's keys go to the others, each taking a share (no single heir)."""
    ring = HashRing(servers(3))

    def live_node(key: str, dead: str) -> str:
        return next(node for node in ring.nodes_for(key) if node != dead)

    heirs = Counter[str]()
    for key in KEYS:
        home = ring.node_for(key)
        if home == "node1":
            heirs[live_node(key, "node1")] += 1
        else:
            assert live_node(key, "node1") == home
    assert set(heirs) == {"node0", "node2"}
    assert min(heirs.values()) > 0.25 * sum(heirs.values()), heirs
    # The same failover node for a key in every process (no randomness).
    again = HashRing(servers(3))
    assert [list(ring.nodes_for(k)) for k in KEYS[:200]] == [
        list(again.nodes_for(k)) for k in KEYS[:200]
    ]
