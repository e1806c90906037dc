"""A real PostgreSQL with PostGIS for the tests: a throwaway cluster on a free loopback
port, run by an unprivileged user, stopped by its PID.

Debian's `postgresql-15` and `postgresql-15-postgis-3` (installed by scripts/test.sh)
provide the binaries. As root, PostgreSQL refuses to run: the cluster then belongs to
the `postgres` user, in a temporary folder it owns. Trust authentication, no fsync: the
data is thrown away.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.support.daemons import free_port, stop_process

RESERVED_PORTS = {5432, 55432}  # the system's and the peers' PostgreSQL may hold them
SUPERUSER = "postgres"


def pg_bindir() -> Path:
    """The folder of initdb, postgres and pg_ctl; a clear failure (never a skip) without."""
    candidates = ["/usr/lib/postgresql/15/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all(Path(folder, name).exists() for name in ("initdb", "postgres", "pg_ctl")):
            return Path(folder)
    raise RuntimeError(
        "PostgreSQL is not installed: the geoms tests need a real PostGIS. Run "
        "./scripts/test.sh (it installs the Debian packages 'postgresql-15' and "
        "'postgresql-15-postgis-3') or apt-get install postgresql-15 postgresql-15-postgis-3."
    )


def _free_port() -> int:
    while True:
        port = free_port()
        if port not in RESERVED_PORTS:
            return port


class PostGIS:
    """A private cluster on 127.0.0.1:<free port> with its unix socket in its own folder;
    `connection` is the libpq string of its `postgres` database (PostGIS created)."""

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="tileserver-postgis-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # The options of every PostgreSQL process: run from the cluster's folder, and,
        # as postgres refuses to run as root, by the postgres user, who owns the folder.
        self._as_owner: dict[str, Any] = {"cwd": self.folder}
        if os.geteuid() == 0:
            try:
                shutil.chown(self.folder, SUPERUSER, SUPERUSER)
            except LookupError:
                shutil.rmtree(self.folder)
                raise RuntimeError(
                    "as root, the tests run PostgreSQL as the 'postgres' user, which does not "
                    "exist: install the Debian package 'postgresql-15' (it creates the user)"
                ) from None
            self._as_owner.update(user=SUPERUSER, group=SUPERUSER, extra_groups=[])

    @property
    def connection(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user={SUPERUSER}"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=120, check=False, **self._as_owner
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.folder),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "20",
            "jit": "off",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_owner
            )
        self._wait_ready(60)
        with psycopg.connect(self.connection, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION postgis")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            try:
                with psycopg.connect(self.connection, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = str(exc)
                time.sleep(0.1)
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        raise RuntimeError(f"postgres did not start on port {self.port}: {last}\n{log}")

    def execute(self, *statements: str) -> None:
        with psycopg.connect(self.connection, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def stop(self) -> None:
        """pg_ctl stop -m fast (it signals the PID of this cluster's postmaster), then
        SIGKILL if it lingers; the folder is removed."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast",
                 "-w", "-t", "20"],
                capture_output=True, timeout=30, check=False, **self._as_owner,
            )  # fmt: skip
            if self.proc.poll() is None:
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.send_signal(signal.SIGQUIT)  # postgres' immediate shutdown
                    stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)
