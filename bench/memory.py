"""Scenario 5: RSS of one fresh gateway idle, then after reading N and 2N completed jobs once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from app.api.job_cache import DEFAULT_BUDGET_BYTES
from app.jobs.models import JobState
from bench.measure import check, expect
from bench.profile import Profile
from bench.seed import clone_jobs
from bench.stage import Stage

CONCURRENCY = 16


def rss_mib(pid: int) -> float:
    """Resident set size of `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def read_all(base: str, ids: list[str]) -> None:
    """GET every job once, `CONCURRENCY` at a time; each must be 200."""
    queue = list(ids)

    async def worker(http: httpx.AsyncClient) -> None:
        while queue:
            job_id = queue.pop()
            response = await http.get(f"{base}/v1/jobs/{job_id}")
            expect(response.status_code == 200, f"{job_id}: {response.status_code}")

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))


async def run(stage: Stage, profile: Profile, *, template: str) -> dict[str, Any]:
    """Restart gateway 0, then fill its caches with 2x `memory_jobs` completed jobs."""
    stage.start_gateway(0)
    pid, base = stage.gateway_pid(0), stage.w.gateway_url(0)
    await asyncio.sleep(1)
    points = [{"jobs": 0, "rss_mib": rss_mib(pid)}]
    upstream = stage.w.upstream_base
    for step in (1, 2):
        ids = await clone_jobs(
            stage.database_url,
            template,
            profile.memory_jobs,
            state=JobState.COMPLETED,
            upstream=upstream,
        )
        started = time.perf_counter()
        await read_all(base, ids)
        elapsed = time.perf_counter() - started
        points.append(
            {
                "jobs": step * profile.memory_jobs,
                "rss_mib": rss_mib(pid),
                "reads_per_s": len(ids) / elapsed,
            }
        )
    idle, first, second = (p["rss_mib"] for p in points)
    growth = second - first
    return {
        "points": points,
        "budget_mib": DEFAULT_BUDGET_BYTES / 2**20,
        "checks": [
            check(
                f"memory: RSS growth from {profile.memory_jobs} to "
                f"{2 * profile.memory_jobs} completed jobs",
                "flat (bounded cache)",
                f"{growth:+.1f} MiB (idle {idle:.0f} MiB, at {profile.memory_jobs}: "
                f"{first:.0f} MiB)",
                growth < 4,
            )
        ],
    }
