"""Jobs for the waiting and soak benchmarks: paid through the SDK, or seeded in bulk.

Seeded jobs are clones of a real paid job row, each tied to its own job of the simulated
upstream (created there with `POST /_sim/jobs`), so the gateway polls and completes them
exactly as it does paid ones. Processes and memory are read from /proc.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from x402.http.clients import wrapHttpxWithPayment

from app.jobs.models import Job, JobState
from bench.measure import expect
from bench.seed import insert_copies
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import PAYER, key_hex


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    """How many files (sockets included) `pid` holds open."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def paid_job(gateway: str, prompt: str = "benchmark template") -> str:
    """One edit paid by the official SDK client; the new job's id."""
    body = {**EDIT_BODY, "prompt": prompt}
    async with wrapHttpxWithPayment(payer_client(key_hex(PAYER)), timeout=60) as http:
        response = await http.post(f"{gateway}/v1/images/edit", json=body)
    expect(response.status_code == 200, f"paid call: {response.status_code} {response.text[:300]}")
    job_id: str = response.json()["jobId"]
    return job_id


def upstream_jobs(upstream_base: str, count: int) -> list[dict[str, Any]]:
    """`count` jobs in progress on the simulated upstream, unpaid (benchmark route)."""
    response = httpx.post(f"{upstream_base}/_sim/jobs", json={"count": count}, timeout=60)
    response.raise_for_status()
    jobs: list[dict[str, Any]] = response.json()
    return jobs


def finish_upstream_jobs(upstream_base: str, ids: list[str], spread_s: float) -> dict[str, float]:
    """Let those upstream jobs complete one after the other over `spread_s`; when each does."""
    body = {"ids": ids, "spread_s": spread_s}
    response = httpx.post(f"{upstream_base}/_sim/jobs/finish", json=body, timeout=60)
    response.raise_for_status()
    completes: dict[str, float] = response.json()["completesAt"]
    return completes


async def seed_submitted(
    database_url: str, template_id: str, upstream: list[dict[str, Any]]
) -> list[str]:
    """One gateway job per upstream job, cloned from `template_id`, submitted and due now."""

    def submitted(up: dict[str, Any]) -> Callable[[str, datetime], dict[str, Any]]:
        return lambda _job_id, now: {
            "state": JobState.SUBMITTED.value,
            "upstream_job_id": up["jobId"],
            "upstream_request_id": up["requestId"],
            "upstream_status_url": up["statusUrl"],
            "created_at": now,
            "last_polled_at": None,
            "next_check_at": now,
        }

    return await insert_copies(database_url, template_id, [submitted(up) for up in upstream])


async def job_states(database_url: str, ids: list[str]) -> dict[str, int]:
    """How many of the jobs `ids` are in each state."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Job.state).where(Job.id.in_(ids)))).all()
    finally:
        await engine.dispose()
    states: dict[str, int] = {}
    for (state,) in rows:
        states[state] = states.get(state, 0) + 1
    return states
