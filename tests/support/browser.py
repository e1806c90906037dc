"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for the tests
of the OpenLayers pages: load a page, wait until its map has loaded and drawn its tiles,
take a screenshot, and report what the page logged.

The wait is for conditions, not for a time: the page asked for what the caller expects
(a tile URL), every request it made has finished in the network and in the page (its
resource timing entries), two animation frames later it asked for nothing new, and two
screenshots a couple of frames apart are identical.

    page = load_page(url, workdir, expect="/1.0.0/osm/")  # a fresh browser and profile
    page.image, page.console, page.urls
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from tests.support.chromium import HANG, chromium

WIDTH, HEIGHT = 800, 600


@dataclass
class Page:
    """What a page did once settled: its screenshot, its console lines (console calls,
    uncaught exceptions, the browser's own errors such as a failed resource) and the URLs
    it loaded, in order."""

    image: Image.Image
    console: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)


def load_page(url: str, workdir: Path, expect: str) -> Page:
    """A fresh headless Chromium (its own profile in workdir) loads url, which must ask
    for a URL containing `expect`, and settles; the browser is stopped."""
    with chromium(workdir, WIDTH, HEIGHT) as port:
        return asyncio.run(_load(port, url, expect))


async def _load(port: int, url: str, expect: str) -> Page:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
            targets = await answer.json()
        target = next(t for t in targets if t.get("type") == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            devtools = _DevTools(ws)
            reader = asyncio.create_task(devtools.read())
            try:
                async with asyncio.timeout(HANG):
                    return await devtools.load(url, expect)
            except TimeoutError:
                raise AssertionError(
                    f"the page did not settle in {HANG:g} s: {len(devtools.pending)} "
                    f"request(s) under way, {devtools.finished_in_page} of "
                    f"{devtools.subresources} seen finished by the page; requested: "
                    f"{devtools.urls}; console: {devtools.console}"
                ) from None
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)


class _DevTools:
    """One page's DevTools session: commands by id, events counted as they come."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.pending: set[str] = set()  # request ids under way
        self.urls: list[str] = []
        self.subresources = 0  # requests other than the page itself
        self.finished_in_page = 0  # resource timing entries the page has
        self.console: list[str] = []
        self.changed = asyncio.Event()  # set at every network event
        self.loaded = asyncio.Event()  # Page.loadEventFired

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        answer = asyncio.get_running_loop().create_future()
        self.answers[number] = answer
        await self.ws.send_json({"id": number, "method": method, "params": params})
        result = await answer
        if "error" in result:
            raise RuntimeError(f"DevTools {method}: {result['error']}")
        return dict(result.get("result", {}))

    async def read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                answer = self.answers.pop(data["id"], None)
                if answer is not None and not answer.done():
                    answer.set_result(data)
            else:
                self.event(data["method"], data.get("params", {}))
        for answer in self.answers.values():
            if not answer.done():
                answer.set_exception(RuntimeError("Chromium closed the DevTools connection"))

    def event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self.pending.add(params["requestId"])
            self.urls.append(params["request"]["url"])
            self.subresources += params.get("type") != "Document"
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self.pending.discard(params["requestId"])
        elif method == "Page.loadEventFired":
            self.loaded.set()
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            description = details.get("exception", {}).get("description", details.get("text"))
            self.console.append(f"Uncaught {description}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            if entry["level"] in ("error", "warning"):
                self.console.append(f"{entry['level']}: {entry['text']} {entry.get('url', '')}")
        else:
            return
        self.changed.set()

    async def load(self, url: str, expect: str) -> Page:
        for domain in ("Page", "Network", "Runtime", "Log"):
            await self.command(f"{domain}.enable")
        await self.command("Network.setCacheDisabled", cacheDisabled=True)
        await self.command(
            "Page.addScriptToEvaluateOnNewDocument",
            source="performance.setResourceTimingBufferSize(100000)",
        )
        await self.command(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False,
        )  # fmt: skip
        await self.command("Page.navigate", url=url)
        await self.loaded.wait()
        while not any(expect in u for u in self.urls):
            self.changed.clear()
            await self.changed.wait()
        previous = b""
        while True:
            await self.settle()
            shot = base64.b64decode((await self.command("Page.captureScreenshot"))["data"])
            if shot == previous:
                break
            previous = shot
        image = Image.open(io.BytesIO(shot)).convert("RGB")
        return Page(image, list(self.console), list(self.urls))

    async def settle(self) -> None:
        """Until every request is finished, in the network and in the page, and two frames
        later none was started."""
        # Two frames, then how many resources the page has seen finish.
        seen_by_page = (
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
            "() => r(performance.getEntriesByType('resource').length))))"
        )
        while True:
            while self.pending:
                self.changed.clear()
                await self.changed.wait()
            requested = len(self.urls)
            answer = await self.command(
                "Runtime.evaluate", expression=seen_by_page, awaitPromise=True
            )
            self.finished_in_page = answer["result"]["value"]
            caught_up = self.finished_in_page >= self.subresources
            if not self.pending and len(self.urls) == requested and caught_up:
                return
