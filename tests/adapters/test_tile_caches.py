"""The flush command `generate_tiles --update` prints for the shared cache: run as printed
by a shell against real Redis servers (one `url`, `servers`, a Sentinel's master), it
empties the cache's database and no other; neither it nor the cache's address as messages
print it shows a password."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.daemons import find_binary
from tests.support.redis import RedisSentinel, RedisServer
from tileserver.adapters.redis_cache import RedisCache
from tileserver.adapters.tile_caches import flush_hint
from tileserver.config import Config, MemcachedConfig, RedisCacheConfig


@pytest.fixture
def redis_servers() -> Iterator[list[RedisServer]]:
    servers = [RedisServer(), RedisServer()]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def config(**shared: Any) -> Config:
    return Config(grids={}, caches={}, layers={}, **shared)


def fill(server: RedisServer) -> None:
    """A key in database 2 (the cache's) and one in database 0 (another user's)."""
    assert "OK" in _cli(server, "-n", "2", "SET", "tile", "x")
    assert "OK" in _cli(server, "-n", "0", "SET", "queue", "y")


def _cli(server: RedisServer, *words: str) -> str:
    redis_cli = find_binary("redis-cli", "redis-tools")
    return subprocess.run([redis_cli, "-p", str(server.port), *words], capture_output=True,
                          text=True, timeout=30, check=True).stdout  # fmt: skip


def keys(server: RedisServer, db: str) -> str:
    return _cli(server, "-n", db, "KEYS", "*").strip()


def run(command: str) -> None:
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_the_flush_command_of_a_url_and_of_servers_empties_their_database(
    redis_servers: list[RedisServer],
) -> None:
    one, two = redis_servers
    for server in redis_servers:
        fill(server)
    run(flush_hint(config(redis_cache=RedisCacheConfig(url=f"redis://127.0.0.1:{one.port}/2"))))
    assert (keys(one, "2"), keys(one, "0"), keys(two, "2")) == ("", "queue", "tile")
    fill(one)
    servers = (("127.0.0.1", one.port), ("127.0.0.1", two.port))
    run(flush_hint(config(redis_cache=RedisCacheConfig(servers=servers, db=2))))
    assert [keys(s, "2") for s in redis_servers] == ["", ""]
    assert [keys(s, "0") for s in redis_servers] == ["queue", "queue"]


def test_the_flush_command_of_sentinels_empties_the_master_they_name(
    redis_servers: list[RedisServer],
) -> None:
    master = redis_servers[0]
    sentinel = RedisSentinel(master)
    sentinel.start()
    try:
        fill(master)
        shared = RedisCacheConfig(sentinels=(("127.0.0.1", sentinel.port),),
                                  service_name=sentinel.service, db=2)  # fmt: skip
        run(flush_hint(config(redis_cache=shared)))
        assert (keys(master, "2"), keys(master, "0")) == ("", "queue")
    finally:
        sentinel.stop()


def test_passwords_are_asked_never_printed() -> None:
    cache = RedisCache(RedisCacheConfig(url="redis://:s3cret@10.0.0.8:6380/3"))  # no I/O yet
    assert cache.addresses == ["10.0.0.8:6380/3"]  # as messages and --dry-run name it
    assert RedisCache(RedisCacheConfig(url="unix:///run/redis.sock")).addresses == [
        "/run/redis.sock"
    ]
    url = RedisCacheConfig(url="redis://:s3cret@10.0.0.8:6380/3")
    assert flush_hint(config(redis_cache=url)) == (
        "redis-cli -h 10.0.0.8 -p 6380 -n 3 --askpass FLUSHDB"
    )
    servers = RedisCacheConfig(servers=(("10.0.0.8", 6379),), password="s3cret", db=1)
    assert "s3cret" not in flush_hint(config(redis_cache=servers))
    assert "--askpass" in flush_hint(config(redis_cache=servers))
    memcached = MemcachedConfig(servers=(("10.0.0.5", 11211), ("10.0.0.6", 11212)))
    assert flush_hint(config(memcached=memcached)) == (
        "echo flush_all | nc -q 2 10.0.0.5 11211; echo flush_all | nc -q 2 10.0.0.6 11212"
    )
