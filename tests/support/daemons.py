"""Real daemons for the tests, each on a free loopback port, started and stopped by us."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; for processes the tests started."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def find_binary(name: str, package: str) -> str:
    """The path of a daemon binary; a clear failure (never a skip) when it is missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        raise RuntimeError(
            f"'{name}' is not installed: the tests need the real daemon. "
            f"Run ./scripts/test.sh (it installs the Debian package '{package}') "
            f"or apt-get install {package}."
        )
    return path


class Memcached:
    """A private memcached on 127.0.0.1:<free port>."""

    def __init__(self, memory_mb: int = 64) -> None:
        self.binary = find_binary("memcached", "memcached")
        self.memory_mb = memory_mb
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
                "-m", str(self.memory_mb), "-t", "2"]  # fmt: skip
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port(self.port, 10, self.proc):
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"memcached did not start on port {self.port}: {err}")

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as an operator's `kill -9` or a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def command(self, line: str) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(line.encode() + b"\r\n")
            data = b""
            while not (data.endswith(b"END\r\n") or data.endswith(b"OK\r\n")
                       or data.endswith(b"ERROR\r\n")):  # fmt: skip
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode()

    def flush_all(self) -> None:
        assert self.command("flush_all").strip() == "OK"

    def stats(self) -> dict[str, int]:
        values = {}
        for line in self.command("stats").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
                values[parts[1]] = int(parts[2])
        return values

    def keys(self, containing: str = "") -> list[str]:
        """The keys of the live items that contain `containing` (memcached's metadump
        lists every item in its LRUs, expired ones too: each is read back to tell)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"lru_crawler metadump all\r\n")
            data = b""
            while not (data.endswith(b"END\r\n") or data.endswith(b"ERROR\r\n")):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        found = []
        for line in data.decode().splitlines():
            if line.startswith("key="):
                key = urllib.parse.unquote(line.split()[0][4:])
                if containing in key and self.get(key) is not None:
                    found.append(key)
        return found

    def get(self, key: str) -> bytes | None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(f"get {key}\r\n".encode())
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"VALUE"):
            return None
        header, _, rest = data.partition(b"\r\n")
        length = int(header.split()[3])
        return rest[:length]
