from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemons import Memcached, refused_port
from tests.support.server import TileServer


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
