"""The floor of a cache hit's CPU on this machine, under any tile server in Python: one
uvloop process answering every request with the same prepared tile (an 8,000-byte body
and the 9 headers of a tileserver hit), measured like `cpu_per_hit.py` (the process's CPU
time over one `wrk -t2 -c32 -d10s`, divided by the answers), for

  aiohttp  aiohttp's low-level `web.Server`, a handler returning a prepared `web.Response`
           (no router, no middleware, no access log): what aiohttp itself costs per hit
  raw      a bare `asyncio.Protocol` writing the prepared answer for each request it finds
           (no HTTP parsing): the event loop's and the kernel's part

in the order given (default: aiohttp raw raw aiohttp).

  flock /tmp/tileserver-bench.lock .venv/bin/python benchmarks/hit_floor.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ondemand import free_port, loadavg, wait_port  # noqa: E402
from cpu_per_hit import schedstat  # noqa: E402
from wrk_output import parse_wrk  # noqa: E402

BODY = b"x" * 8000
HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Cache-Control": "public, max-age=3600",
    "Expires": "Sat, 05 Dec 2026 09:00:00 GMT",
    "ETag": '"0123abcd-0456ef78"',
    "X-Tile-Source": "hot",
    "Last-Modified": "Sat, 05 Dec 2026 07:00:00 GMT",
    "Content-Type": "image/png",
}
RAW = (
    b"HTTP/1.1 200 OK\r\n"
    + b"".join(f"{k}: {v}\r\n".encode() for k, v in HEADERS.items())
    + b"Content-Length: 8000\r\nDate: Sat, 05 Dec 2026 07:00:00 GMT\r\nServer: floor\r\n\r\n"
    + BODY
)
PATH = "/wmts/1.0.0/osm/default/epsg3857/16/23896/34120.png"


class Raw(asyncio.Protocol):
    """The prepared answer for each request head received (a GET has no body)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        heads = self.buffer.count(b"\r\n\r\n")
        if heads:
            self.buffer = self.buffer.rsplit(b"\r\n\r\n", 1)[1]
            self.transport.writelines([RAW] * heads)


async def serve(mode: str, port: int) -> None:
    from aiohttp import web

    loop = asyncio.get_running_loop()
    if mode == "raw":
        await loop.create_server(Raw, "127.0.0.1", port)
    else:

        async def handler(request: web.BaseRequest) -> web.Response:
            return web.Response(body=BODY, headers=HEADERS)

        await loop.create_server(web.Server(handler), "127.0.0.1", port)
    await asyncio.Event().wait()


def measure(mode: str, duration: str) -> str:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", mode, "--port", str(port)])
    try:
        if not wait_port(port, 30, server):
            raise RuntimeError(f"{mode}: the server did not start")
        load = loadavg()
        before = schedstat(server.pid)[0]
        wrk = subprocess.run(
            ["wrk", "-t2", "-c32", f"-d{duration}", f"http://127.0.0.1:{port}{PATH}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        spent = schedstat(server.pid)[0] - before
    finally:
        server.terminate()
        server.wait()
    try:
        requests = parse_wrk(wrk.stdout).requests
    except ValueError as exc:
        raise RuntimeError(f"{mode}: {exc}\n{wrk.stderr}") from None
    return f"| {mode} | {load} | {requests} | {spent / requests / 1000:.1f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("order", nargs="*", default=["aiohttp", "raw", "raw", "aiohttp"])
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--serve", choices=("aiohttp", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve, args.port))
        return 0
    unknown = set(args.order) - {"aiohttp", "raw"}
    if unknown:
        raise SystemExit(f"unknown mode(s): {', '.join(sorted(unknown))}")
    print(f"# {' '.join(sys.argv)}  ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, "
          f"{os.cpu_count()} CPUs)")  # fmt: skip
    print("| server | load before | requests | CPU µs per request |")
    print("|---|---|---|---|")
    for mode in args.order:
        print(measure(mode, args.duration), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
