"""Headless Chromium, from Debian, for the tests that open a page in a real browser."""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest


def chromium_binary() -> str:
    """Chromium from Debian; a clear failure (never a skip) without it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "'chromium' is not installed: a page test needs a real browser. "
            "Run ./scripts/test.sh (it installs the Debian package 'chromium') or "
            "apt-get install chromium."
        )
    return path


def page_value(url: str, expression: str, workdir: Path, timeout: float = 120) -> Any:
    """The value of a JavaScript expression in headless Chromium showing url, once it is
    not null: evaluated again every 0.1 s through the DevTools protocol until then.

    The page says when it is done (an element, a data attribute): waiting on that, not
    on a clock, keeps the test right on a loaded machine. `timeout` only bounds a hang.
    """
    command = [
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={workdir / 'profile'}", "--window-size=1200,600",
        "--allow-file-access-from-files", "--remote-debugging-port=0", "about:blank",
    ]  # fmt: skip
    browser = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    reader: threading.Thread | None = None
    try:
        assert browser.stderr is not None
        seen = []
        for line in browser.stderr:  # ends when Chromium exits
            seen.append(line)
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
                break
        else:
            raise AssertionError("Chromium did not start:\n" + "".join(seen[-20:]))
        # Keep reading what it writes, so that a full pipe never blocks it.
        reader = threading.Thread(target=browser.stderr.read, daemon=True)
        reader.start()
        try:
            return asyncio.run(asyncio.wait_for(_evaluate_until(port, url, expression), timeout))
        except TimeoutError:
            raise AssertionError(f"{expression!r} still null after {timeout} s on {url}") from None
    finally:
        browser.kill()
        browser.wait()
        if reader is not None:
            reader.join()
        if browser.stderr is not None:
            browser.stderr.close()


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
