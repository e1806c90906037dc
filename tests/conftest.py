"""Fixtures of the whole suite: the daemons a test gets for itself (it may kill, flush or
restart them) and those the session shares, each test in a namespace of its own (a Redis
stream, an SQS queue, a folder of the S3 bucket), so that one test never sees another's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.app_server import AppServer, close_shared_pools
from tests.support.daemons import Memcached, refused_port
from tests.support.mapserver import MapServerWMS, monaco_wms
from tests.support.moto import MotoServer
from tests.support.outcome import CALL_FAILED
from tests.support.redis import RedisServer
from tests.support.s3 import SeaweedS3
from tests.support.server import TileServer

# --- the order of the modules -----------------------------------------------------------

# The folders whose modules start servers and daemons and take seconds each, in the order
# they run; every other module after them, each module's tests in their own order.
# `scripts/test.sh` gives pytest-xdist the modules in this order (--no-loadscope-reorder):
# the long ones first, the short ones filling the workers' ends (xdist's own order, by
# number of tests, put the e2e modules, which have few tests, last).
SLOW_FIRST = ("e2e", "fuzz", "contract")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        folder = item.path.parent.name
        return SLOW_FIRST.index(folder) if folder in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within each folder is kept


# --- what a fixture may know of its test's outcome ---------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[pytest.TestReport]:
    """Records whether the test itself failed (tests/support/outcome.py)."""
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


# --- daemons of one test -----------------------------------------------------------------


@pytest.fixture
def memcached() -> Iterator[Memcached]:
    """A private memcached for one test (tests kill, flush and restart it)."""
    daemon = Memcached()
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port where nothing answers: every connection is refused (see
    `refused_port`), for the tests of dead daemons and unreachable upstreams."""
    with refused_port() as port:
        yield port


@pytest.fixture
def tileserver(tmp_path: Path) -> Iterator[Callable[..., TileServer]]:
    """Starts real `tileserver serve` processes; stops them after the test."""
    started: list[TileServer] = []

    def start(
        config: dict[str, Any],
        workers: int = 1,
        render_processes: int = 1,
        env: dict[str, str] | None = None,
    ) -> TileServer:
        server = TileServer(config, tmp_path, workers, render_processes, env)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def app_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., AppServer]]:
    """Serves the real application in the test process (tests/support/app_server.py), for
    the tests that need no `tileserver serve` process of their own; stopped after the
    test. `env` goes into the environment, where the backends read it (AWS credentials)."""
    started: list[AppServer] = []

    def start(
        config: dict[str, Any],
        render_processes: int = 1,
        env: dict[str, str] | None = None,
        hot_path: bool = True,
    ) -> AppServer:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        server = AppServer(config, tmp_path, render_processes, env, hot_path)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def _shared_render_pools() -> Iterator[None]:
    """The render processes AppServers share (tests/support/app_server.py) stop with the
    session."""
    yield
    close_shared_pools()


# --- daemons the session shares (never killed: a test that kills one starts its own) ------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the session; a test names its own stream (`t-<uuid>`)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's SQS and SNS for the session; a test names its own queues and topics."""
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server for the session, bucket `tiles`; a test writes under a
    folder of its own (`run-<uuid>/`)."""
    server = SeaweedS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mapserver() -> Iterator[MapServerWMS]:
    """The Monaco WMS (MapServer over a PostGIS of its own) for the session. A test that
    sets a fault mode sets it back to `normal`; one that stops the WMS or its database
    uses a `monaco_wms()` of its own."""
    with monaco_wms() as server:
        yield server
