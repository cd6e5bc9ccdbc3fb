"""Waiting clients: many `GET /v1/jobs/{id}?wait=30` held open on one gateway process.

Jobs in progress are seeded (clones of a real paid job, each with its own job on the
simulated upstream). Every job is read once, then client processes (bench.waiting_client)
open the long polls, spread evenly over the jobs. With every request written, the gateway's
RSS is read again (growth per waiting connection), then the upstream jobs complete one after
the other over `spread_s`. Each answer's arrival is compared with the moment the upstream
first answered "completed" for its job (when the gateway learned it: the fan-out latency)
and with the moment the job completed upstream (which adds up to one poll interval of
detection). The simulated upstream logs every status request, so the gap between two polls
of one job is checked. The baseline is a bare ASGI app on the same uvicorn settings
(bench.waiting_baseline) holding the same clients on shared futures.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.measure import expect
from bench.stage import Stage, pin
from bench.waiting_stats import summarise
from bench.world_jobs import (
    cpu_seconds,
    finish_upstream_jobs,
    open_fds,
    paid_job,
    rss_kib,
    seed_submitted,
    upstream_jobs,
)
from sandbox.chain import free_port
from sandbox.processes import ServiceProcess

WAIT_S = 30
# Nothing is pinned: the gateway polls its 1,000 jobs besides holding the connections, and
# on two shared cores one core alone would measure the neighbours more than the gateway.
SERVER_CORE: int | None = None
CLIENT_CORE: int | None = None
PROFILE_S = int(os.environ.get("BENCH_PROFILE_S", "0"))  # py-spy while the clients connect
GATEWAY_ENV = {"X402R_POLL_INTERVAL_S": "2.0", "X402R_WORKER_INTERVAL_S": "1.0"}  # defaults


@dataclass(frozen=True)
class Size:
    """How big one waiting run is."""

    jobs: int
    connections: int
    client_processes: int
    spread_s: float  # the upstream jobs complete one after the other over this long
    settle_s: float  # pause between the last request written and the RSS reading


FULL = Size(jobs=1000, connections=10_000, client_processes=4, spread_s=10, settle_s=4)
SMOKE = Size(jobs=20, connections=200, client_processes=1, spread_s=1, settle_s=1)


def _clients(base: str, paths: list[str], size: Size, log_dir: Path) -> list[tuple[Any, Path]]:
    """Start the client processes; each spec's paths are rotated so every job gets its share."""
    started = []
    per = size.connections // size.client_processes
    for k in range(size.client_processes):
        out = log_dir / f"waiting-client-{k}.json"
        offset = (k * per) % len(paths)
        spec = {
            "base": base,
            "paths": paths[offset:] + paths[:offset],
            "connections": per,
            "out": str(out),
        }
        spec_file = log_dir / f"waiting-client-{k}.spec.json"
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.waiting_client", str(spec_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        pin(proc.pid, CLIENT_CORE)
        started.append((proc, out))
    return started


def py_spy(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes] | None:
    """`py-spy record` of `pid` for `seconds` (raw stacks into `out`), when asked for."""
    if seconds <= 0:
        return None
    print(f"[bench] profiling {pid} into {out}", flush=True)
    # Only samples holding the GIL: CPU spent, not time waiting in the loop's poll.
    command = ["py-spy", "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "-f", "raw"]
    command.append("--gil")
    exe = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(exe), *command[1:], "-o", str(out)], stdout=subprocess.DEVNULL)


def _await_ready(clients: list[tuple[Any, Path]], limit_s: float = 180) -> float:
    """Block until every client printed `ready`; seconds it took."""
    started = time.monotonic()
    for proc, _ in clients:
        line = proc.stdout.readline()  # the clients write nothing else
        expect(line.strip() == "ready", f"a waiting client ended early: {line!r}")
        expect(time.monotonic() - started < limit_s, "clients took too long to connect")
    return time.monotonic() - started


def _answers(clients: list[tuple[Any, Path]]) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    for proc, out in clients:
        expect(proc.wait(WAIT_S + 200) == 0, "a waiting client failed")
        answers += json.loads(out.read_text())
    return answers


def _hold(
    pid: int, base: str, paths: list[str], size: Size, log_dir: Path
) -> tuple[list[tuple[Any, Path]], dict[str, Any]]:
    """Open every long poll; memory and file descriptors before and after."""
    before = {"rss_kib": rss_kib(pid), "fds": open_fds(pid), "cpu_s": cpu_seconds(pid)}
    started = time.monotonic()
    profiler = py_spy(pid, log_dir / f"profile-{pid}.txt", PROFILE_S)
    clients = _clients(base, paths, size, log_dir)
    series: list[tuple[float, int]] = []
    connect_s = _await_ready(clients)
    # Written is not yet accepted: wait until the server holds every connection.
    deadline = time.monotonic() + 120
    held_all = before["fds"] + size.connections * 0.99
    while open_fds(pid) < held_all and time.monotonic() < deadline:
        time.sleep(0.2)
        series.append((round(time.monotonic() - started, 1), open_fds(pid)))
    accepted_s = time.monotonic() - started
    time.sleep(size.settle_s)
    if profiler is not None:
        profiler.wait()
    after = {"rss_kib": rss_kib(pid), "fds": open_fds(pid), "cpu_s": cpu_seconds(pid)}
    held = {
        "connect_s": connect_s,
        "accepted_s": accepted_s,
        "fds_while_accepting": series[:: max(1, len(series) // 40)],
        "before": before,
        "after": after,
        "rss_per_connection_kib": (after["rss_kib"] - before["rss_kib"]) / size.connections,
    }
    return clients, held


async def _read_each(base: str, ids: list[str]) -> None:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        for start in range(0, len(ids), 16):
            batch = ids[start : start + 16]
            answers = await asyncio.gather(*(http.get(f"/v1/jobs/{i}") for i in batch))
            expect(all(a.status_code == 200 for a in answers), "a seeded job did not read")


def gateway_run(stage: Stage, size: Size) -> dict[str, Any]:
    """Seed, hold the long polls, complete the upstream jobs, collect."""
    w = stage.w
    template = asyncio.run(paid_job(w.gateway_url(0)))
    w.gateways[0].stop()
    extra = json.loads(os.environ.get("BENCH_GATEWAY_ENV", "{}"))  # experiments
    w.start_gateway(0, extra_env={**GATEWAY_ENV, **extra})
    stage.pin_gateway(0, SERVER_CORE)
    pid, base = stage.gateway_pid(0), w.gateway_url(0)
    upstream = upstream_jobs(w.upstream_base, size.jobs)
    ids = asyncio.run(seed_submitted(stage.database_url, template, upstream))
    asyncio.run(_read_each(base, ids))
    time.sleep(2)  # the worker's first round of polls over the new jobs
    paths = [f"/v1/jobs/{i}?wait={WAIT_S}" for i in ids]
    clients, held = _hold(pid, base, paths, size, stage.log_dir)
    up_ids = [u["jobId"] for u in upstream]
    polls_from = time.time()
    completes = finish_upstream_jobs(w.upstream_base, up_ids, size.spread_s)
    answers = _answers(clients)
    stats = w.upstream_stats()
    times = httpx.get(f"{w.upstream_base}/_sim/status_times", timeout=30).json()
    by_path = {f"/v1/jobs/{i}?wait={WAIT_S}": u for i, u in zip(ids, up_ids, strict=True)}
    return summarise(
        answers,
        upstream_of=by_path,
        learned=stats["first_completed_at"],
        completed=completes,
        poll_times={u: [t for t in times.get(u, []) if t >= polls_from - 10] for u in up_ids},
        interval_s=float(GATEWAY_ENV["X402R_POLL_INTERVAL_S"]),
        held=held,
    )


def baseline_run(stage: Stage, size: Size) -> dict[str, Any]:
    """The same clients on the bare hold server."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ServiceProcess(
        "waiting-baseline",
        ["-m", "bench.waiting_baseline", "--port", str(port)],
        ready_url=base + "/",
        log_dir=stage.log_dir,
    ).start(timeout=60)
    try:
        assert server.proc is not None
        pin(server.proc.pid, SERVER_CORE)
        keys = [f"key{i}" for i in range(size.jobs)]
        paths = [f"/hold/{k}" for k in keys]
        clients, held = _hold(server.proc.pid, base, paths, size, stage.log_dir)
        released = httpx.post(
            base + "/release", json={"keys": keys, "spread_s": size.spread_s}, timeout=120
        ).json()["releasedAt"]
        answers = _answers(clients)
    finally:
        server.stop()
    return summarise(
        answers,
        upstream_of={f"/hold/{k}": k for k in keys},
        learned=released,
        completed=released,
        poll_times={},
        interval_s=0,
        held=held,
    )


def run(stage: Stage, size: Size) -> dict[str, Any]:
    """Baseline first (it needs nothing from the stage), then the gateway."""
    baseline = baseline_run(stage, size)
    gateway = gateway_run(stage, size)
    return {"size": size.__dict__, "baseline": baseline, "gateway": gateway}
