"""A tiny HTTP front for MapServer's CGI `mapserv`, for the tests: one `mapserv` process
per request, an access log the tests count GetMaps from, and fault modes switched at
runtime. Standard library only; started by tests/support/mapserver.py as

    python wms_runner.py --port PORT --mapserv /usr/bin/mapserv --log ACCESS_LOG

with MAPSERVER_CONFIG_FILE and the libpq variables (PGHOST, PGPORT...) in its
environment, which every `mapserv` inherits.

Paths:
- `/wms?<WMS request>`: the WMS, answered according to the current mode.
- `http://<any host>/<any path>?<WMS request>`, as a client sends it to its HTTP proxy:
  the same WMS. With HTTP_PROXY=http://127.0.0.1:<port>, the WMS URLs of configuration
  files written for other machines (TileCloud-chain's `http://mapserver:8080/`) reach it.
- `/_control?mode=<mode>[&count=N]`: sets the mode (for the next N WMS requests, then
  back to `normal`); `/_control` alone reports it; `/_control?release=1` lets the
  answers held (`held`) finish. Answered by the runner itself.

Modes:
- `normal`: mapserv's answer.
- `service_exception`: the request is forwarded to mapserv with its layers replaced by an
  unknown one, so the answer is MapServer's own error (for a WMS 1.1.1 GetMap: 200,
  application/vnd.ogc.se_xml, a ServiceExceptionReport).
- `html_error[:<status>]`: an HTML error page with that status (default 500).
- `truncated`: mapserv's image with its full Content-Length but only half of the body,
  then the connection is closed (a lying Content-Length).
- `half_png`: half of mapserv's image with a matching Content-Length (a well-formed HTTP
  answer carrying a broken PNG).
- `slow:<seconds>`: sleeps, then answers normally.
- `held`: mapserv's headers and the first half of its image, then the rest once
  `/_control?release=1` is asked (a WMS that keeps its answer coming).

A request with the header `X-Runner-Direct: 1` is always answered normally and logged as
`direct`, not `wms`, so that the tests can fetch reference images without counting them.

Access log: one tab-separated line per request, written before the answer is sent
(so a client that has its answer also finds its line):
    <unix time> <kind: wms|direct|control|other> <method> <status> <body bytes sent>
    <milliseconds> <mode> <query string>
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

DIRECT_HEADER = "X-Runner-Direct"
FAULT_LAYER = "__fault_unknown_layer__"
HTML_ERROR = (
    "<!DOCTYPE html>\n<html><head><title>{status} Internal Server Error</title></head>"
    "<body><h1>Internal Server Error</h1><p>The server encountered an internal error "
    "(wms_runner fault mode html_error).</p></body></html>\n"
)


class Mode:
    """The current fault mode, shared by the request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mode = "normal"
        self._remaining: int | None = None

    def set(self, mode: str, count: int | None) -> None:
        with self._lock:
            self._mode = mode
            self._remaining = count

    def take(self) -> str:
        """The mode of one WMS request; counts it against `count`."""
        with self._lock:
            mode = self._mode
            if self._remaining is not None:
                self._remaining -= 1
                if self._remaining <= 0:
                    self._mode, self._remaining = "normal", None
            return mode

    def describe(self) -> str:
        with self._lock:
            remaining = "" if self._remaining is None else f" remaining={self._remaining}"
            return f"mode={self._mode}{remaining}"


def valid_mode(mode: str) -> bool:
    name, _, arg = mode.partition(":")
    if name in ("normal", "service_exception", "truncated", "half_png", "held"):
        return not arg
    if name == "html_error":
        return not arg or (arg.isdigit() and 400 <= int(arg) <= 599)
    if name == "slow":
        try:
            return float(arg) >= 0
        except ValueError:
            return False
    return False


class Runner(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, mapserv: str, log_path: str) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.mapserv = mapserv
        self.mode = Mode()
        self.released = threading.Event()  # the `held` answers may finish
        self.log_lock = threading.Lock()
        self.log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the server)

    def write_log(self, fields: list[str]) -> None:
        line = "\t".join(field.replace("\t", " ").replace("\n", " ") for field in fields)
        with self.log_lock:
            self.log.write(line + "\n")
            self.log.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real web server
    server: Runner

    def log_message(self, format: str, *args: object) -> None:
        pass  # the access log is ours

    def do_GET(self) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        if url.path == "/_control" and not url.scheme:
            self._control(url.query, started)
        elif url.path == "/wms" or url.scheme == "http":
            # An absolute URL is a request for another host sent to us as its HTTP proxy:
            # every host's WMS is this one.
            self._wms(url.query, started)
        else:
            self._send(404, "text/plain", b"not found\n", "other", url.query, started, "-")

    def do_POST(self) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._send(405, "text/plain", b"GET only\n", "other", url.query, started, "-")

    # --- control -------------------------------------------------------------------------

    def _control(self, query: str, started: float) -> None:
        params = dict(parse_qsl(query))
        if "mode" in params:
            mode = params["mode"]
            count = params.get("count")
            if not valid_mode(mode) or (count is not None and not count.isdigit()):
                body = f"invalid mode {mode!r} or count {count!r}\n".encode()
                self._send(400, "text/plain", body, "control", query, started, "-")
                return
            self.server.mode.set(mode, int(count) if count else None)
            if mode == "held":
                self.server.released.clear()
        if params.get("release") == "1":
            self.server.released.set()
        body = (self.server.mode.describe() + "\n").encode()
        self._send(200, "text/plain", body, "control", query, started, "-")

    # --- WMS -----------------------------------------------------------------------------

    def _wms(self, query: str, started: float) -> None:
        direct = self.headers.get(DIRECT_HEADER, "") == "1"
        mode = "normal" if direct else self.server.mode.take()
        kind = "direct" if direct else "wms"
        name, _, arg = mode.partition(":")
        if name == "slow":
            time.sleep(float(arg))
        if name == "html_error":
            status = int(arg or 500)
            body = HTML_ERROR.format(status=status).encode()
            self._send(status, "text/html; charset=utf-8", body, kind, query, started, mode)
            return
        forwarded = broken_request(query) if name == "service_exception" else query
        status, headers, body = self._mapserv(forwarded)
        content_type = headers.pop("content-type", "application/octet-stream")
        if name == "truncated":
            self._send(
                status, content_type, body, kind, query, started, mode,
                extra=headers, sent=body[: len(body) // 2],
            )  # fmt: skip
        elif name == "held":
            self._send(
                status, content_type, body, kind, query, started, mode,
                extra=headers, sent=body[: len(body) // 2], rest=body[len(body) // 2 :],
            )  # fmt: skip
        elif name == "half_png":
            half = body[: len(body) // 2]
            self._send(status, content_type, half, kind, query, started, mode, extra=headers)
        else:
            self._send(status, content_type, body, kind, query, started, mode, extra=headers)

    def _mapserv(self, query: str) -> tuple[int, dict[str, str], bytes]:
        """Runs mapserv as a CGI program; (status, lower-cased headers, body)."""
        host, port = "127.0.0.1", self.server.server_port
        env = dict(os.environ)
        env.update(
            GATEWAY_INTERFACE="CGI/1.1",
            REQUEST_METHOD="GET",
            QUERY_STRING=query,
            SCRIPT_NAME="/wms",
            SERVER_NAME=host,
            SERVER_PORT=str(port),
            SERVER_PROTOCOL="HTTP/1.1",
            HTTP_HOST=self.headers.get("Host", f"{host}:{port}"),
            REMOTE_ADDR=self.client_address[0],
        )
        try:
            result = subprocess.run(
                [self.server.mapserv], env=env, capture_output=True, timeout=120, check=False
            )
        except subprocess.TimeoutExpired:
            return 504, {"content-type": "text/plain"}, b"mapserv timed out\n"
        if result.stderr:
            sys.stderr.buffer.write(result.stderr)
            sys.stderr.flush()
        if result.returncode != 0 and not result.stdout:
            message = f"mapserv exited with {result.returncode}\n".encode() + result.stderr
            return 502, {"content-type": "text/plain"}, message
        return parse_cgi(result.stdout)

    # --- answers -------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        kind: str,
        query: str,
        started: float,
        mode: str,
        extra: dict[str, str] | None = None,
        sent: bytes | None = None,
        rest: bytes | None = None,
    ) -> None:
        """Logs, then answers with Content-Length len(body) and `sent` (default body), then
        `rest` once released (`held`)."""
        payload = body if sent is None else sent
        elapsed = (time.monotonic() - started) * 1000
        self.server.write_log(
            [f"{time.time():.3f}", kind, self.command, str(status), str(len(payload)),
             f"{elapsed:.1f}", mode, query]
        )  # fmt: skip
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                if name not in ("content-length", "status", "connection"):
                    self.send_header(name, value)
            if sent is not None and rest is None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            if rest is not None:
                self.server.released.wait(120)
                self.wfile.write(rest)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout): nothing to do


def broken_request(query: str) -> str:
    """The query with an unknown layer in LAYERS / QUERY_LAYERS (or an unknown REQUEST
    when there are none), so that mapserv answers with its ServiceException."""
    params = parse_qsl(query, keep_blank_values=True)
    names = {key.upper() for key, _ in params}
    if names & {"LAYERS", "QUERY_LAYERS"}:
        params = [
            (key, FAULT_LAYER if key.upper() in ("LAYERS", "QUERY_LAYERS") else value)
            for key, value in params
        ]
    else:
        params = [(key, value) for key, value in params if key.upper() != "REQUEST"]
        params.append(("REQUEST", "__fault_unknown_request__"))
    return urlencode(params)


def parse_cgi(output: bytes) -> tuple[int, dict[str, str], bytes]:
    """A CGI program's output: headers up to the first empty line, then the body."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        return 502, {"content-type": "text/plain"}, b"mapserv wrote no CGI headers\n" + output
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip():
            headers[name.strip().lower()] = value.strip()
    status = 200
    if "status" in headers:
        status = int(headers.pop("status").split()[0])
    return status, headers, body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mapserv", required=True)
    parser.add_argument("--log", required=True, help="access log (appended)")
    args = parser.parse_args(argv)
    server = Runner(args.port, args.mapserv, args.log)
    # SIGTERM (stop_process) ends serve_forever through SystemExit, closing the log.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.log.close()


if __name__ == "__main__":
    main()
