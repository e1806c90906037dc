"""Headless Chromium, from Debian, for the tests that open a page in a real browser: one
way to start it (`chromium`, a fresh profile, its DevTools port), used by `page_value` here
and by `browser.load_page` (the OpenLayers pages' screenshots)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from tests.support.daemons import find_binary, stop_process
from tests.support.waiting import wait_until

HANG = 120.0  # seconds: bounds a hang, no expected duration


@contextmanager
def chromium(workdir: Path, width: int = 1200, height: int = 600) -> Iterator[int]:
    """A headless Chromium with its own profile in workdir, stopped on exit; yields its
    DevTools port. A missing Chromium is a clear failure naming its package."""
    workdir.mkdir(parents=True, exist_ok=True)
    profile = workdir / "profile"
    log = workdir / "chromium.log"
    command = [
        find_binary("chromium", "chromium", alternatives=("chromium-browser",)),
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", f"--user-data-dir={profile}", "--allow-file-access-from-files",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
        f"--window-size={width},{height}", "about:blank",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Chromium writes the port it chose into the profile once it listens.
        port_file = profile / "DevToolsActivePort"

        def listening() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")
            return port_file.exists() and len(port_file.read_text().splitlines()) >= 2

        wait_until(listening, "Chromium's DevTools port", HANG)
        yield int(port_file.read_text().splitlines()[0])
    finally:
        stop_process(proc)


def page_value(url: str, expression: str, workdir: Path, timeout: float = HANG) -> Any:
    """The value of a JavaScript expression in headless Chromium showing url, once it is
    not null: evaluated again every 0.1 s through the DevTools protocol until then.

    The page says when it is done (an element, a data attribute): waiting on that, not
    on a clock, keeps the test right on a loaded machine. `timeout` only bounds a hang.
    """
    with chromium(workdir) as port:
        try:
            return asyncio.run(asyncio.wait_for(_evaluate_until(port, url, expression), timeout))
        except TimeoutError:
            raise AssertionError(f"{expression!r} still null after {timeout} s on {url}") from None


async def _evaluate_until(port: int, url: str, expression: str) -> Any:
    async with aiohttp.ClientSession() as session:
        new = f"http://127.0.0.1:{port}/json/new?{quote(url, safe='')}"
        async with session.put(new) as response:
            target = await response.json()
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            for message_id in itertools.count(1):
                await ws.send_json({
                    "id": message_id, "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True},
                })  # fmt: skip
                reply: dict[str, Any] = {}
                while reply.get("id") != message_id:
                    reply = await ws.receive_json()
                value = reply.get("result", {}).get("result", {}).get("value")
                if value is not None:
                    return value
                await asyncio.sleep(0.1)
    raise AssertionError("unreachable")
