"""Soak: mixed traffic for minutes against the sandbox world on Postgres.

First the sustainable paid rate is probed (paid calls by the official SDK client, several at
once, for a few seconds). Then, for the soak's duration: unpaid requests (each must be a
402), paid calls at half that rate (each must be accepted, then is followed with long polls
until its job completes) and plain status polls of the jobs made so far. Sampled every few
seconds: the gateway's RSS, CPU and finished-job cache (/metrics), the database's
connections (pg_stat_activity), the load average.
At the end every job the soak made must be completed and the ledger must match the chain:
each row a real transfer (the e2e tests' audit) and the sums equal to what the operator and
the upstream's payee received over the soak.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from x402.http.clients.httpx import x402AsyncTransport

from bench.stage import PG_HOST, PG_USER, SERVER_CORE, Stage
from bench.world_jobs import cpu_seconds, job_states, rss_kib
from sandbox.chain import usdc_balance
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import OPERATOR, PAYER, UPSTREAM_PAYEE, World, address, key_hex
from tests.ledger_audit import audit

JOB_DELAY_S = 3.0  # the simulated upstream's jobs take this long
UNPAID_PER_S = 20
STATUS_PER_S = 20
PROBE_CONCURRENCY = 6
SOAK_CAP_ATOMIC = 10**12
ADMIN_TOKEN = secrets.token_hex(32)  # the soak's gateway only: /metrics is behind it
CACHE_GAUGES = ("x402r_result_cache_bytes", "x402r_result_cache_entries")
KEEPALIVE_S = 2.0  # below uvicorn's 5 s (see `soak`)


def paying_client() -> httpx.AsyncClient:
    """The official SDK's paying transport, over connections kept alive `KEEPALIVE_S`."""
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S))
    transport = x402AsyncTransport(payer_client(key_hex(PAYER)), inner)
    return httpx.AsyncClient(transport=transport, timeout=60)


@dataclass
class Tally:
    """What the soak did and what went wrong."""

    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)

    def count(self, kind: str, ok: bool, detail: str = "") -> None:
        """One request of `kind`; a wrong answer is an error."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if not ok:
            self.errors.append(f"{kind}: {detail}"[:300])


async def _paid(http: httpx.AsyncClient, url: str, tally: Tally, prompt: str) -> str | None:
    try:
        response = await http.post(url, json={**EDIT_BODY, "prompt": prompt})
    except httpx.HTTPError as exc:
        tally.count("paid", False, f"{type(exc).__name__}: {exc}")
        return None
    tally.count("paid", response.status_code == 200, f"{response.status_code} {response.text}")
    if response.status_code != 200:
        return None
    job_id: str = response.json()["jobId"]
    tally.jobs.append(job_id)
    return job_id


async def probe_paid_rate(base: str, seconds: float) -> float:
    """Paid calls completed per second with `PROBE_CONCURRENCY` callers."""
    tally = Tally()
    url = base + "/v1/images/edit"
    deadline = time.monotonic() + seconds
    counter = itertools.count()
    async with paying_client() as http:

        async def caller() -> None:
            while time.monotonic() < deadline:
                await _paid(http, url, tally, f"probe {next(counter)}")

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(PROBE_CONCURRENCY)))
        elapsed = time.monotonic() - started
    if tally.errors:
        raise AssertionError(f"paid calls failed while probing: {tally.errors[:3]}")
    return len(tally.jobs) / elapsed


async def _paced(per_s: float, until: float, action: Any, tally: Tally, kind: str) -> None:
    """Start `action()` `per_s` times a second until `until`, never waiting for it; an
    exception (a broken connection, a timeout) is one more error of `kind`."""
    tasks: set[asyncio.Task[Any]] = set()
    next_at = time.monotonic()

    async def guarded() -> None:
        try:
            await action()
        except Exception as exc:
            tally.count(kind, False, f"{type(exc).__name__}: {exc}")

    while next_at < until:
        task = asyncio.create_task(guarded())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += 1 / per_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*tasks)


async def _follow(http: httpx.AsyncClient, job_id: str, tally: Tally) -> None:
    """Long-poll a job until it is final; it must end completed."""
    try:
        await _follow_once(http, job_id, tally)
    except Exception as exc:
        tally.count("long poll", False, f"{type(exc).__name__}: {exc}")


async def _follow_once(http: httpx.AsyncClient, job_id: str, tally: Tally) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = await http.get(f"/v1/jobs/{job_id}", params={"wait": 20})
        tally.count("long poll", response.status_code == 200, f"{response.status_code}")
        state = response.json().get("status") if response.status_code == 200 else None
        if state not in (None, "processing"):
            tally.count("job", state == "completed", f"{job_id} ended {state}")
            return
    tally.count("job", False, f"{job_id} unfinished after 120 s")


async def cache_gauges(http: httpx.AsyncClient, tally: Tally) -> dict[str, float] | None:
    """The gateway's finished-job cache gauges from /metrics (a failed scrape is an error)."""
    try:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    except httpx.HTTPError as exc:
        tally.count("metrics", False, f"{type(exc).__name__}: {exc}")
        return None
    tally.count("metrics", response.status_code == 200, f"{response.status_code}")
    lines = (line for line in response.text.splitlines() if line.startswith(CACHE_GAUGES))
    values = dict(line.rsplit(" ", 1) for line in lines)
    return {name: float(values.get(name, "nan")) for name in CACHE_GAUGES}


async def _sampler(stage: Stage, until: float, tally: Tally, every_s: float) -> None:
    pid = stage.gateway_pid(0)
    conn = await asyncpg.connect(host=PG_HOST, user=PG_USER, database="postgres")
    limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)  # see `soak`
    http = httpx.AsyncClient(base_url=stage.w.gateway_url(0), timeout=30, limits=limits)
    started = time.monotonic()
    cache = dict.fromkeys(CACHE_GAUGES, float("nan"))
    try:
        while True:
            cache = await cache_gauges(http, tally) or cache
            rows = await conn.fetch(
                "SELECT state, count(*) AS n FROM pg_stat_activity WHERE datname = $1 "
                "GROUP BY state",
                stage.db_name,
            )
            by_state = {r["state"] or "none": r["n"] for r in rows}
            tally.samples.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_mib": rss_kib(pid) / 1024,
                    "cpu_s": cpu_seconds(pid),
                    "db_connections": float(sum(by_state.values())),
                    "db_active": float(by_state.get("active", 0)),
                    "jobs": float(len(tally.jobs)),
                    "cache_mib": cache["x402r_result_cache_bytes"] / 2**20,
                    "cache_entries": cache["x402r_result_cache_entries"],
                    "load1": os.getloadavg()[0],
                }
            )
            if time.monotonic() >= until:
                return
            await asyncio.sleep(every_s)
    finally:
        await conn.close()
        await http.aclose()


async def soak(stage: Stage, seconds: float, paid_per_s: float, sample_s: float) -> Tally:
    """The mixed traffic for `seconds`, then every started job followed to its end."""
    base = stage.w.gateway_url(0)
    tally = Tally()
    until = time.monotonic() + seconds
    followers: set[asyncio.Task[None]] = set()
    counter = itertools.count()
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends: a request sent on a
    # connection the server is closing at that moment fails, whoever the server is.
    limits = httpx.Limits(max_connections=400, keepalive_expiry=KEEPALIVE_S)
    async with (
        httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http,
        paying_client() as paying,
    ):

        async def unpaid() -> None:
            response = await http.post("/v1/images/edit", json=EDIT_BODY)
            tally.count("unpaid", response.status_code == 402, f"{response.status_code}")

        async def paid() -> None:
            job_id = await _paid(paying, base + "/v1/images/edit", tally, f"soak {next(counter)}")
            if job_id is not None:
                task = asyncio.create_task(_follow(http, job_id, tally))
                followers.add(task)

        async def status() -> None:
            if not tally.jobs:
                return
            response = await http.get(f"/v1/jobs/{random.choice(tally.jobs)}")
            tally.count("status", response.status_code == 200, f"{response.status_code}")

        await asyncio.gather(
            _paced(UNPAID_PER_S, until, unpaid, tally, "unpaid"),
            _paced(paid_per_s, until, paid, tally, "paid"),
            _paced(STATUS_PER_S, until, status, tally, "status"),
            _sampler(stage, until, tally, sample_s),
        )
        await asyncio.gather(*followers)
    return tally


def balances(w: World, parties: tuple[int, ...]) -> dict[int, int]:
    """USDC balance of each party (dev account index)."""
    return {i: usdc_balance(w.rpc_url, address(i)) for i in parties}


def run(
    stage: Stage,
    minutes: float,
    probe_s: float,
    sample_s: float,
    cache_mib: int,
) -> dict[str, Any]:
    """Probe, soak, check jobs and ledger; the figures and samples. `cache_mib`: the gateway's."""
    w = stage.w
    httpx.post(f"{w.upstream_base}/_sim/config", json={"job_delay_s": JOB_DELAY_S}, timeout=10)
    # The default daily cap on upstream spend (50 USDC) is about 950 jobs: a longer soak
    # would be refused (rightly, before any charge) once it is reached.
    env = {
        "X402R_DAILY_UPSTREAM_CAP_ATOMIC": str(SOAK_CAP_ATOMIC),
        "X402R_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    env["X402R_RESULT_CACHE_MIB"] = str(cache_mib)
    w.gateways[0].stop()
    w.start_gateway(0, extra_env=env)
    stage.pin_gateway(0, SERVER_CORE)
    base = w.gateway_url(0)
    sustainable = asyncio.run(probe_paid_rate(base, probe_s))
    parties = (OPERATOR, UPSTREAM_PAYEE)
    before = balances(w, parties)
    started = time.monotonic()
    tally = asyncio.run(soak(stage, minutes * 60, sustainable / 2, sample_s))
    elapsed = time.monotonic() - started
    after = balances(w, parties)
    audit_error = ""
    sums: dict[str, int] = {}
    try:
        sums = asyncio.run(audit(stage.database_url, w.rpc_url, tally.jobs))
    except AssertionError as exc:
        audit_error = f"ledger audit: {exc}"[:300]
    states = asyncio.run(job_states(stage.database_url, tally.jobs)) if tally.jobs else {}
    received = {"operator": after[OPERATOR] - before[OPERATOR]}
    received["upstream payee"] = after[UPSTREAM_PAYEE] - before[UPSTREAM_PAYEE]
    ledger_matches = not audit_error and (
        sums.get("charge") == received["operator"]
        and sums.get("upstream") == received["upstream payee"]
    )
    return {
        "minutes": minutes,
        "cache_mib": cache_mib,
        "elapsed_s": elapsed,
        "sustainable_paid_per_s": sustainable,
        "paid_per_s": sustainable / 2,
        "unpaid_per_s": UNPAID_PER_S,
        "status_per_s": STATUS_PER_S,
        "counts": tally.counts,
        "errors": len(tally.errors) + (1 if audit_error else 0),
        "error_samples": ([audit_error] if audit_error else []) + tally.errors[:10],
        "jobs": len(tally.jobs),
        "job_states": states,
        "ledger": sums,
        "chain_received": received,
        "ledger_matches_chain": ledger_matches,
        "samples": tally.samples,
    }
