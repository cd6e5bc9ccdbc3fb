"""The Python cost of one unpaid 402, in-process: the gateway's ASGI callable against the raw app.

`python -m bench.unpaid_inprocess [--requests N] [--repeats R]` starts the gateway (real
lifespan, SQLite in a temp dir, no workers) and calls it directly with the scope, body and
headers `bench.unpaid` sends over wrk (`POST /v1/images/edit`, valid JSON, no payment), then
the raw app of `bench.servers` answering the same bytes. No sockets and no server, so the
noise of a shared machine stays out of the ratio: both run in the same process, interleaved,
R rounds of N requests each, timed in process CPU time (time spent preempted by other work
on the machine does not count) and in wall time; the medians are printed. Under
`valgrind --tool=callgrind` the same loop gives instruction counts (bench/notes.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.main import create_app
from bench.servers import raw_app
from sandbox.pay import EDIT_BODY
from tests.settings_factory import make_settings

PATH = "/v1/images/edit"
BODY = json.dumps(EDIT_BODY).encode()
# What uvicorn (httptools) builds for wrk's request; a fresh copy per request, as uvicorn does.
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8402),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "POST",
    "root_path": "",
    "path": PATH,
    "raw_path": PATH.encode(),
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8402"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
REQUEST = {"type": "http.request", "body": BODY, "more_body": False}
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


async def _receive() -> dict[str, Any]:
    return REQUEST


async def _discard(message: dict[str, Any]) -> None:
    return None


async def answer_of(app: App) -> Answer:
    """Status, headers and body `app` sends for the request."""
    sent: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({**SCOPE, "state": {}}, _receive, keep)
    start, body = sent
    return start["status"], start["headers"], body["body"]


async def per_request(app: App, n: int) -> tuple[float, float]:
    """CPU and wall seconds per request over `n` requests."""
    cpu, wall = time.process_time, time.perf_counter
    cpu_0, wall_0 = cpu(), wall()
    for _ in range(n):
        await app({**SCOPE, "state": {}}, _receive, _discard)
    return (cpu() - cpu_0) / n, (wall() - wall_0) / n


async def main(requests: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'gateway.db'}", workers_enabled=False
        )
        gateway = create_app(settings)
        async with gateway.router.lifespan_context(gateway):
            status, headers, body = await answer_of(gateway)
            assert status == 402, f"the gateway answered {status}"
            raw = raw_app(status, list(headers), body)
            assert await answer_of(raw) == (status, headers, body), "not the same answer"
            for app in (gateway, raw):  # warm-up
                await per_request(app, max(requests // 5, 1))
            rounds = []
            for _ in range(repeats):
                rounds.append(
                    (await per_request(gateway, requests), await per_request(raw, requests))
                )
    print(f"unpaid 402 in-process, median of {repeats} rounds x {requests:,} requests")
    for i, clock in enumerate(("CPU", "wall")):
        gw = statistics.median(g[i] for g, _ in rounds)
        ceiling = statistics.median(r[i] for _, r in rounds)
        ratio = statistics.median(g[i] / r[i] for g, r in rounds)
        print(
            f"  {clock:4s}  gateway front {gw * 1e6:6.2f} us, raw ASGI app {ceiling * 1e6:5.2f} us"
            f" (same {len(body):,}-byte body): gateway - raw {(gw - ceiling) * 1e6:6.2f} us,"
            f" gateway / raw {ratio:.2f}x"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.unpaid_inprocess")
    parser.add_argument("--requests", type=int, default=20_000, help="per round")
    parser.add_argument("--repeats", type=int, default=9, help="rounds (medians reported)")
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.repeats))


if __name__ == "__main__":
    cli()
