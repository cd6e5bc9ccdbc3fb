"""The floor for long polls: a bare ASGI app on the gateway's uvicorn settings.

`GET /hold/{key}` waits on one shared future per key (no database, no framework) and
answers a small JSON document when it is released; `POST /release {"keys": [...],
"spread_s": S}` releases the keys one after the other over S seconds and answers when each
was released (epoch seconds), so the fan-out latency is measured as for the gateway.
Run `python -m bench.waiting_baseline --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

BODY = json.dumps({"status": "completed", "images": [{"url": "https://cdn.test/a.png"}]})
HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


class HoldApp:
    """Holds every `GET /hold/{key}` until its key is released."""

    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future[None]] = {}

    def _future(self, key: str) -> asyncio.Future[None]:
        future = self.futures.get(key)
        if future is None:
            future = self.futures[key] = asyncio.get_running_loop().create_future()
        return future

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                gc.collect()
                gc.freeze()  # as the gateway does after start-up
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path: str = scope["path"]
        if path.startswith("/hold/"):
            await asyncio.shield(self._future(path[len("/hold/") :]))
            await self._answer(send, BODY.encode())
        elif path == "/release":
            body = b""
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            released = await self._release(json.loads(body))
            await self._answer(send, json.dumps({"releasedAt": released}).encode())
        else:
            await self._answer(send, b"{}")

    async def _release(self, spec: dict[str, Any]) -> dict[str, float]:
        keys: list[str] = spec["keys"]
        spread = float(spec.get("spread_s", 0))
        loop = asyncio.get_running_loop()
        start = loop.time()
        released: dict[str, float] = {}
        for i, key in enumerate(keys):
            await asyncio.sleep(max(0.0, start + spread * i / max(1, len(keys)) - loop.time()))
            released[key] = time.time()
            future = self._future(key)
            if not future.done():
                future.set_result(None)
        return released

    @staticmethod
    async def _answer(send: Send, body: bytes) -> None:
        headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    """CLI: serve on 127.0.0.1 with the gateway's uvicorn settings."""
    parser = argparse.ArgumentParser(prog="python -m bench.waiting_baseline")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args(argv)
    from bench.waiting_client import raise_fd_limit

    raise_fd_limit(30_000)
    uvicorn.run(
        HoldApp(),
        host="127.0.0.1",
        port=options.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
