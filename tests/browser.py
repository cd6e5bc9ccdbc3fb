"""Headless Chromium over the DevTools protocol (loopback only), for the browser tests: the
page's console and uncaught exceptions are observed as they happen, not scraped from a log."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import websockets

CHROMIUM = shutil.which("chromium")


class Page:
    """One DevTools page session: commands, and every event seen meanwhile."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if message.get("id") == ident:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message)

    async def idle(self, seconds: float) -> None:
        """Collect events for `seconds`."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            with suppress(TimeoutError):
                self.events.append(json.loads(await asyncio.wait_for(self.ws.recv(), left)))


@asynccontextmanager
async def chromium_page(tmp_path: Path) -> AsyncIterator[Page]:
    """Headless Chromium with DevTools on a loopback port; the page it opened first."""
    assert CHROMIUM is not None
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            assert proc.poll() is None, "chromium exited"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient(timeout=10) as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(url, max_size=64 * 1024 * 1024) as ws:
            page = Page(ws)
            for domain in ("Runtime", "Log", "Page"):
                await page.call(f"{domain}.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def console_errors(events: list[dict[str, Any]], page_url: str, origin: str) -> list[str]:
    """Uncaught exceptions, console.error/assert, and failed loads other than the expected two.

    Expected: the page itself answers 402 (that is the paywall), and there is no favicon.
    """
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("Uncaught " + details.get("exception", {}).get("description", ""))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = [a.get("value", a.get("description")) for a in params["args"]]
            errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            expected = (entry.get("url") == page_url and "status of 402" in entry["text"]) or (
                entry.get("url") == origin + "/favicon.ico" and "status of 404" in entry["text"]
            )
            if not expected:
                errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}")
    return errors
