"""A real Redis server for the tests (Debian's `redis-server`), on a free loopback port,
without persistence; its folder is removed at `stop`."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.daemons import find_binary, free_port, stop_process, wait_port


class _RedisProcess:
    """A redis-server process of the tests: its free port, its folder, its commands."""

    def __init__(self) -> None:
        self.binary = find_binary("redis-server", "redis-server")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    def command(self, *words: str) -> str:
        """One command in the inline protocol; the raw answer (enough for the tests' checks)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(" ".join(words).encode() + b"\r\n")
            return s.recv(65536).decode()

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class RedisServer(_RedisProcess):
    """A private redis-server on 127.0.0.1:<free port>."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="redis-"))
        args = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self._dir),
            "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port(self.port, 10, self.proc):
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}: {err}")

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class RedisSentinel(_RedisProcess):
    """A private Redis Sentinel (`redis-server --sentinel`) watching `master`, named
    `service`; `start` returns once it knows the master's address."""

    def __init__(self, master: RedisServer, service: str = "tiles") -> None:
        super().__init__()
        self.master = master
        self.service = service

    def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="redis-sentinel-"))
        conf = self._dir / "sentinel.conf"  # the sentinel rewrites it: a file of its own
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {self._dir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
        )
        self.proc = subprocess.Popen(
            [self.binary, str(conf), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_port(self.port, 10, self.proc):
            self.stop()
            raise RuntimeError(f"redis sentinel did not start on port {self.port}")
        for _ in range(1000):  # it names the master as soon as it has read its config
            if str(self.master.port) in self.command("SENTINEL", "get-master-addr-by-name",
                                                     self.service):  # fmt: skip
                return
        self.stop()
        raise RuntimeError("redis sentinel does not name its master")
