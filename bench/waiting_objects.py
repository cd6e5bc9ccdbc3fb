"""What each waiting long poll keeps alive, in one process, without the noise of RSS.

`python -m bench.waiting_objects [--waiters N] [--jobs J] [--top K]` starts the gateway
in-process (real lifespan, SQLite in a temp dir, no workers, uvloop), seeds J jobs in
progress and reads each once, then starts N `GET /v1/jobs/{id}?wait=30` ASGI calls as tasks,
spread evenly over the jobs, each with the scope uvicorn (httptools) builds and a cycle
object standing in for uvicorn's. Once every call blocks on its wait, a `tracemalloc`
snapshot is compared with one taken before: bytes held per waiting request, grouped by the
line of our code (app/ or this harness) that asked for them, and the new gc-tracked
objects by type (`sys.getsizeof`). The bare app of the benchmark (bench.waiting_baseline's
`HoldApp`) is measured the same way. Then the jobs complete and every waiter must be
answered 200 with the completed job (the bare app's waiters are released).

What the harness allocates per call (the task, its coroutine, the scope, the cycle) is
uvicorn's share in both; the gateway's own share is the difference between the two totals.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import linecache
import sys
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from app.api.job_reads import job_reads
from app.jobs.models import JobState
from app.main import create_app
from bench.waiting_baseline import HoldApp
from tests.inprocess_app import complete, insert_job
from tests.settings_factory import make_settings

ROOT = Path(__file__).resolve().parent.parent
HARNESS = str(Path(__file__).resolve())
OURS = (str(ROOT / "app"), HARNESS, str(ROOT / "bench" / "waiting_baseline.py"))
FRAMES = 12
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Cycle:
    """What uvicorn's `RequestResponseCycle` gives the app: `receive` answers the (empty)
    request body, then blocks until the client goes; `send` keeps the answer."""

    __slots__ = ("body", "received", "scope", "status")

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.received = False
        self.status = 0
        self.body = b""

    async def receive(self) -> dict[str, Any]:
        if not self.received:
            self.received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.get_running_loop().create_future()  # never: the client stays
        raise AssertionError

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body += message.get("body", b"")

    async def run_asgi(self, app: ASGIApp) -> None:
        await app(self.scope, self.receive, self.send)


def uvicorn_scope(path: str, query: bytes, port: int) -> dict[str, Any]:
    """The scope httptools builds for the benchmark client's request (Host header only)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8402),
        "client": ("127.0.0.1", port),
        "scheme": "http",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8402")],
        "state": {},
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
    }


def _owner(trace: tracemalloc.Traceback) -> str:
    """The most recent frame in our code that led to an allocation (else the innermost)."""
    for frame in reversed(trace):  # oldest first: reversed is most recent first
        if frame.filename.startswith(OURS):
            name = Path(frame.filename).relative_to(ROOT)
            line = linecache.getline(frame.filename, frame.lineno).strip()
            return f"{name}:{frame.lineno}  {line[:70]}"
    frame = trace[-1]
    return f"{frame.filename}:{frame.lineno}"


def _kind(obj: object) -> str:
    name = type(obj).__name__
    if name in ("coroutine", "function", "method"):
        return f"{name} {getattr(obj, '__qualname__', '?')}"
    return name


async def _measure(
    start: Callable[[int], asyncio.Task[None]], n: int
) -> tuple[list[asyncio.Task[None]], dict[str, Any]]:
    """Start `n` calls (`start(i)`), let them block, and see what they keep alive: traced
    from just before the first call, so every allocation still traced at the end is new."""
    gc.collect()
    before_ids = {id(o) for o in gc.get_objects()}
    tracemalloc.start(FRAMES)
    tasks = [start(i) for i in range(n)]
    for _ in range(20):  # every call reaches its wait
        await asyncio.sleep(0.01)
    assert not any(t.done() for t in tasks), "a waiter was answered before its job finished"
    gc.collect()
    new: Counter[str] = Counter()
    new_bytes: Counter[str] = Counter()
    for obj in gc.get_objects():
        if id(obj) not in before_ids:
            new[_kind(obj)] += 1
            new_bytes[_kind(obj)] += sys.getsizeof(obj)
    obj = None
    del before_ids
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snapshot.statistics("traceback")
    owners: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    for stat in stats:
        owners[_owner(stat.traceback)] += stat.size
        blocks[_owner(stat.traceback)] += stat.count
    return tasks, {
        "bytes_per_waiter": sum(s.size for s in stats) / n,
        "owners": owners,
        "blocks": blocks,
        "objects": new,
        "object_bytes": new_bytes,
    }


async def gateway(n: int, jobs: int, tmp: Path) -> dict[str, Any]:
    """N long polls on J jobs in progress of the gateway, measured, then answered."""
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'gateway.db'}",
        workers_enabled=False,
        poll_interval_s=600.0,  # no re-read by the watches while measuring
        max_wait_s=120,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        ids = [await insert_job(app, JobState.SUBMITTED) for _ in range(jobs)]
        for i, job_id in enumerate(ids):  # read once, as the benchmark does; warms the path
            cycle = Cycle(uvicorn_scope(f"/v1/jobs/{job_id}", b"", 40000 + i))
            await cycle.run_asgi(app)
            assert cycle.status == 200
        cycles = [
            Cycle(uvicorn_scope(f"/v1/jobs/{ids[i % jobs]}", b"wait=30", 10000 + i))
            for i in range(n)
        ]
        tasks, found = await _measure(lambda i: asyncio.create_task(cycles[i].run_asgi(app)), n)
        reads = job_reads(app)
        assert reads is not None
        found["watches"] = len(reads.waits)
        for job_id in ids:
            await complete(app, job_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for job_id in ids:  # what the worker's poller says after polling each job
            reads.waits.refreshed(job_id)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        found["answered_s"] = loop.time() - started
        answers = {(c.status, json.loads(c.body)["status"]) for c in cycles}
        assert answers == {(200, "completed")}, answers
    return found


async def bare(n: int, jobs: int) -> dict[str, Any]:
    """The same on the benchmark's bare hold app."""
    app = HoldApp()
    cycles = [Cycle(uvicorn_scope(f"/hold/key{i % jobs}", b"", 10000 + i)) for i in range(n)]
    tasks, found = await _measure(lambda i: asyncio.create_task(cycles[i].run_asgi(app)), n)
    for future in app.futures.values():
        future.set_result(None)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert {c.status for c in cycles} == {200}
    return found


def _report(name: str, found: dict[str, Any], n: int, top: int) -> None:
    print(f"\n== {name}: {found['bytes_per_waiter']:,.0f} bytes per waiting request (tracemalloc)")
    print("   top allocation sites (our line that asked), bytes / blocks per waiter:")
    for owner, size in found["owners"].most_common(top):
        print(f"   {size / n:8.1f}  {found['blocks'][owner] / n:5.2f}  {owner}")
    print("   new gc-tracked objects per waiter (count, sys.getsizeof bytes):")
    for kind, count in found["objects"].most_common(top):
        if count >= n / 20:
            print(f"   {count / n:6.2f}  {found['object_bytes'][kind] / n:8.1f}  {kind}")


async def main_async(n: int, jobs: int, top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        found_gateway = await gateway(n, jobs, Path(tmp))
    found_bare = await bare(n, jobs)
    _report(f"gateway ({n} waiters on {jobs} jobs)", found_gateway, n, top)
    _report(f"bare app ({n} waiters on {jobs} keys)", found_bare, n, top)
    own = found_gateway["bytes_per_waiter"] - found_bare["bytes_per_waiter"]
    print(
        f"\nper waiting request: gateway {found_gateway['bytes_per_waiter']:,.0f} B, bare app"
        f" {found_bare['bytes_per_waiter']:,.0f} B; the gateway's own share {own:,.0f} B"
        f" ({own / 1024:.2f} KiB); watches {found_gateway['watches']}"
    )
    print(
        f"every gateway waiter answered {found_gateway['answered_s'] * 1000:.0f} ms after its"
        " jobs' watches were told they completed"
    )


def main(argv: list[str] | None = None) -> None:
    """CLI."""
    parser = argparse.ArgumentParser(prog="python -m bench.waiting_objects")
    parser.add_argument("--waiters", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--top", type=int, default=15)
    options = parser.parse_args(argv)
    uvloop.run(main_async(options.waiters, options.jobs, options.top))


if __name__ == "__main__":
    main()
