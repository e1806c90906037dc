"""The physical ceiling of a cache hit on this machine: nginx serving the same tiles as files.

The warm set's tiles, as tileserver answered them (same bytes), are written under
`<dir>/static/` at the path tileserver serves them on, and Debian's nginx (`nginx-light`
or `nginx`; `bash scripts/install-system-deps.sh nginx-light`) serves that folder on a
free loopback port with 2 worker processes (as many as tileserver's workers and the
cores here), `sendfile`, no access log and keep-alive connections that are never closed
by a request count. Nothing is cached in front of it but the page cache: this is what a
hit costs when the server does nothing but copy a file to a socket, so a ratio to it says
how much of the machine a server's own work takes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.support.daemons import free_port, wait_port  # noqa: E402

NGINX = "/usr/sbin/nginx"
CONFIG = """\
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
{user}
events {{ worker_connections 1024; }}
http {{
  access_log off;
  error_log {prefix}/error.log warn;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 10000000;
  types {{ image/png png; image/jpeg jpg jpeg; }}
  default_type application/octet-stream;
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {prefix}/static;
    location / {{ try_files $uri =404; }}
  }}
}}
"""


class StaticNginx:
    """nginx on 127.0.0.1:<port> serving `files` (URL path -> bytes) from `prefix`/static."""

    def __init__(self, prefix: Path, files: dict[str, bytes], workers: int = 2) -> None:
        if not Path(NGINX).exists():
            raise SystemExit(f"{NGINX} is missing: bash scripts/install-system-deps.sh nginx-light")
        self.prefix = prefix.resolve()
        static = self.prefix / "static"
        shutil.rmtree(static, ignore_errors=True)
        for path, body in files.items():
            target = static / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # as root, nginx's workers would drop to `nobody`; keep them on our own files' owner
        user = "user root root;" if os.geteuid() == 0 else ""
        self.config_path = self.prefix / "nginx.conf"
        self.config_path.write_text(
            CONFIG.format(workers=workers, prefix=self.prefix, port=self.port, user=user)
        )
        self.command = [NGINX, "-p", str(self.prefix), "-c", str(self.config_path), "-e",
                        str(self.prefix / "error.log")]  # fmt: skip
        self.version = subprocess.run(
            [NGINX, "-v"], capture_output=True, text=True, check=False
        ).stderr.strip()
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_port(self.port, 30, self.proc):
            self.stop()
            raise RuntimeError(f"nginx did not start: {self.error_log()}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
