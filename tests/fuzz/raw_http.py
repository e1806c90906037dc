"""A client that writes HTTP requests byte for byte on a socket and reads the answers
(hostile encodings reach the server's parser exactly as generated)."""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from tests.fuzz.fuzz_files import ROUTE

# --- a client that writes requests byte for byte ----------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    version: bytes = b"HTTP/1.1"

    @property
    def route(self) -> str | None:
        return self.headers.get(ROUTE.lower())

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


class _Closed(Exception):
    """The server closed the connection without answering."""


class Connection:
    """One HTTP/1.1 keep-alive connection to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._sock: socket.socket | None = None
        self._file: io.BufferedReader | None = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._file = None

    def exchange(self, request: bytes, head: bool = False) -> Answer:
        """Sends one request, reads its answer; a second try on a fresh connection when a
        kept-alive one turns out closed."""
        for attempt in (1, 2):
            reused = self._sock is not None
            if self._sock is None:
                self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                self._file = self._sock.makefile("rb")
            try:
                # Refused part-way (an oversized request)? Its answer was sent first.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._sock.sendall(request)
                answer = self._read(head)
            except (_Closed, ConnectionError):
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            if answer.headers.get("connection", "").lower() == "close" or answer.version in (
                b"HTTP/1.0",
                b"HTTP/0.9",
            ):
                self.close()
            return answer
        raise AssertionError("unreachable")

    def _read(self, head: bool) -> Answer:
        file = self._file
        assert file is not None
        code = 100
        while 100 <= code < 200:  # skips interim answers (100 Continue)
            line = file.readline(70000)
            if not line:
                raise _Closed()
            version, status, _ = line.split(b" ", 2)
            assert version.startswith(b"HTTP/"), line
            headers: dict[str, str] = {}
            while True:
                line = file.readline(70000)
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            code = int(status)
        if head or code in (204, 304):
            body = b""
        elif "content-length" in headers:
            body = file.read(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(file.readline(100).split(b";")[0], 16):
                body += file.read(size)
                file.readline(10)
            file.readline(10)
        else:
            body = file.read()
            headers["connection"] = "close"
        return Answer(code, headers, body, version)


def http_request(
    target: str | bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    host: bytes | None = b"127.0.0.1",
) -> bytes:
    """A request exactly as given (a str target must be ASCII: it is sent as is)."""
    raw = target.encode("ascii") if isinstance(target, str) else target
    lines = [method + b" " + raw + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"
