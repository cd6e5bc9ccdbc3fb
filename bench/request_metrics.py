"""Micro-timing: the per-request cost of counting answers by route and status.

`python -m bench.request_metrics` sends N answers through a bare ASGI app, with and without
`app.api.request_metrics.counting` around its `send`, and prints the difference per request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.api.request_metrics import counting

N = 200_000
FIXED = frozenset({"/v1/images/edit"})
START = {"type": "http.response.start", "status": 402, "headers": []}
BODY = {"type": "http.response.body", "body": b"{}"}


async def _sink(message: Any) -> None:
    return None


async def _answer(send: Any) -> None:
    await send(START)
    await send(BODY)


async def _run(wrapped: bool) -> float:
    started = time.perf_counter()
    for _ in range(N):
        scope = {"type": "http", "method": "POST", "path": "/v1/images/edit"}
        send = counting(scope, _sink, FIXED) if wrapped else _sink
        await _answer(send)
    return (time.perf_counter() - started) / N


async def main() -> None:
    await _run(True)  # warm the label cache
    bare = min([await _run(False) for _ in range(3)])
    counted = min([await _run(True) for _ in range(3)])
    print(f"bare {bare * 1e6:.2f} us, counted {counted * 1e6:.2f} us, "
          f"cost {(counted - bare) * 1e6:.2f} us per request")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
