"""A real `tileserver serve` process for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.daemons import free_port, stop_process, wait_port
from tests.support.waiting import HANG, wait_until
from tileserver.config_loader import render_text

ROOT = Path(__file__).resolve().parents[2]
STYLE = ROOT / "config" / "styles" / "osm.xml"


def demo_config(memcached: str | None, **layer_overrides: Any) -> dict[str, Any]:
    """The demo configuration, pointed at a given memcached (None: the embedded cache)."""
    text = render_text(ROOT / "config" / "demo.yaml.mako", environ={})
    data: dict[str, Any] = yaml.safe_load(text)
    data["layer_default"]["mapfile"] = str(STYLE)
    data.pop("caches")
    data.pop("generation")
    if memcached is None:
        data.pop("memcached")
    else:
        data["memcached"] = {"servers": [memcached], "prefix": "test/", "retry_interval": 0.5}
    for name, overrides in layer_overrides.items():
        data["layers"].setdefault(name, {}).update(overrides)
    # These tests look at where each tile comes from (Memcached, a store, a render): the
    # in-process hot tier, on by default, would answer repeats as `hot` for 2 s. Its own
    # tests (test_hot_tier.py) run with the defaults.
    data.setdefault("server", {})["hot_cache_mb"] = 0
    return data


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, body)


PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


class RenderAwareClient:
    """GETs of a test's server (`base`, its `log`) that wait for answer first's renders."""

    base: str

    def log(self) -> str:
        raise NotImplementedError

    def renders(self) -> int:
        return self.log().count("rendered metatile")

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        """GET path; after an answer rendered for it, waits until the render's other tiles
        are written (answer first answers before that; the server logs the render once
        they are), so that the test's next request finds them in the cache."""
        before = self.renders()
        response = fetch(self.base + path, headers)
        if response.headers.get("x-tile-source") == "render":
            wait_until(lambda: self.renders() > before, "the rendered metatile's tiles written")
        return response

    def get_until(
        self,
        path: str,
        done: Callable[[Response], object],
        what: str,
        timeout: float = HANG,
        interval: float = 0.1,
    ) -> Response:
        """GETs path until an answer satisfies `done`: that answer. After `timeout`, an
        AssertionError naming `what`, with the last answer."""
        last: list[Response] = []

        def answered() -> object:
            last[:] = [self.get(path)]
            return done(last[0])

        wait_until(answered, what, timeout, interval, detail=lambda: describe(last[0]))
        return last[0]


def describe(response: Response) -> str:
    """An answer in a failure message: status, headers and the start of the body."""
    return f"the last answer: {response.status} {response.headers} {response.body[:300]!r}"


class TileServer(RenderAwareClient):
    """`tileserver serve` of config: a dict written to workdir/config.yaml, or the path of
    a file served as it is."""

    def __init__(self, config: dict[str, Any] | Path, workdir: Path, workers: int = 1,
                 render_processes: int = 1, env: dict[str, str] | None = None) -> None:  # fmt: skip
        # The upstream WMS requests honour HTTP_PROXY & co: only those a test gives.
        inherited = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
        self.env = {**inherited, **(env or {})}
        if isinstance(config, Path):
            self.config_path = config
        else:
            self.config_path = workdir / "config.yaml"
            self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / f"tileserver-{time.monotonic_ns()}.log"
        self.port = free_port()
        self.workers = workers
        self.render_processes = render_processes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tileserver",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--render-processes",
                str(self.render_processes),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + timeout
        if not wait_port(self.port, timeout, self.proc):
            self.stop()
            raise RuntimeError(f"tileserver did not start:\n{self.log()}")
        wait_until(
            self._ready,
            "tileserver to become ready (its Capabilities, a render pool per worker)",
            max(0.0, deadline - time.monotonic()),  # one bound for the port and readiness
            0.1,
            detail=self.log,
        )

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"tileserver exited ({self.proc.returncode}):\n{self.log()}")
        capabilities = fetch(self.base + "/wmts/1.0.0/WMTSCapabilities.xml")
        return capabilities.status == 200 and self.log().count("render pool:") >= self.workers

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            stop_process(self.proc, grace=20)
            code = self.proc.returncode
            self.proc = None
            self._log.close()
        return code
