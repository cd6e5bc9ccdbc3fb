"""Scenario 4: what the gateway adds to a paid request, net of facilitator, chain and upstream.

Each paid call is timed by the client; the relays time the facilitator hop (verify, settle,
and the chain behind them) and the upstream hop (which includes the upstream's own
facilitator). Gateway time = total - hops. Signing by the paying client is not counted.
"""

from __future__ import annotations

import asyncio
import time
from statistics import median
from typing import Any

import httpx
from x402.http import decode_payment_required_header, encode_payment_signature_header

from bench.measure import check, expect
from bench.profile import Profile
from bench.seed import park_jobs
from bench.stage import Stage
from bench.world_jobs import cpu_seconds
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import PAYER, key_hex


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _paid_call(
    http: httpx.AsyncClient, url: str, stage: Stage, prompt: str
) -> tuple[dict[str, Any], dict[str, float]]:
    body = {**EDIT_BODY, "prompt": prompt}
    unpaid = await http.post(url, json=body)
    expect(unpaid.status_code == 402, f"unpaid request gave {unpaid.status_code}")
    required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    payload = await payer_client(key_hex(PAYER)).create_payment_payload(required)
    headers = {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}
    start = time.perf_counter()
    paid = await http.post(url, json=body, headers=headers)
    end = time.perf_counter()
    assert stage.relays is not None
    await asyncio.sleep(0.01)  # let the relay thread record the last response it forwarded
    hops = stage.relays.between(start, end)
    failed = [
        f"{h.service} {h.request_line} -> {h.status} {h.detail!r}" for h in hops if h.status >= 300
    ]
    expect(
        paid.status_code == 200, f"paid request gave {paid.status_code}: {paid.text[:300]} {failed}"
    )
    fac = sum(h.ms for h in hops if h.service == "facilitator")
    up = [h for h in hops if h.service == "upstream"]
    total = (end - start) * 1000
    timing = {
        "total": total,
        "facilitator": fac,
        "upstream": sum(h.ms for h in up),
        "gateway": total - fac - sum(h.ms for h in up),
        "upstream_round_trips": float(len(up)),
        "facilitator_round_trips": float(len([h for h in hops if h.service == "facilitator"])),
    }
    accepted: dict[str, Any] = paid.json()
    return accepted, timing


async def run(stage: Stage, profile: Profile) -> dict[str, Any]:
    """`paid_warmup_calls` unrecorded calls (the first fetches the upstream's requirements),
    then `paid_calls` timed ones, each run with the jobs before it parked (no background
    polling)."""
    url = stage.w.gateway_url(0) + "/v1/images/edit"
    timings: list[dict[str, float]] = []
    warmup: list[float] = []
    jobs: list[str] = []
    async with httpx.AsyncClient(timeout=60) as http:
        first, first_timing = await _paid_call(http, url, stage, "warm-up edit")
        jobs.append(first["jobId"])
        for i in range(1, profile.paid_warmup_calls):
            await park_jobs(stage.database_url, jobs)
            accepted, timing = await _paid_call(http, url, stage, f"warm-up edit {i}")
            jobs.append(accepted["jobId"])
            warmup.append(timing["gateway"])
        pid, cpu_s = stage.gateway_pid(), 0.0
        for i in range(profile.paid_calls):
            # Earlier jobs are parked as if their upstream job had finished: call N must not
            # run beside N-1 jobs being polled (the sandbox upstream keeps them processing
            # for the status scenarios). Polling is measured on its own (amplification).
            # The last job stays in progress: the later scenarios poll it.
            await park_jobs(stage.database_url, jobs)
            before = cpu_seconds(pid)
            accepted, timing = await _paid_call(http, url, stage, f"edit number {i}")
            await asyncio.sleep(0.02)  # what the gateway does right after answering counts
            cpu_s += cpu_seconds(pid) - before
            jobs.append(accepted["jobId"])
            timings.append(timing)
    keys = ("total", "facilitator", "upstream", "gateway")
    stats = {
        k: {"p50": median(t[k] for t in timings), "p99": pct([t[k] for t in timings], 0.99)}
        for k in keys
    }
    trips = [t["upstream_round_trips"] for t in timings]
    gw50 = stats["gateway"]["p50"]
    per_call = sum(trips) / len(trips)
    cpu_ms = cpu_s * 1000 / len(timings)
    return {
        "calls": len(timings),
        "cpu_ms_per_call": cpu_ms,
        "warmup_calls": 1 + len(warmup),
        "warmup_gateway_p50": median(warmup) if warmup else None,
        "stats": stats,
        "upstream_round_trips": {
            "first_call": first_timing["upstream_round_trips"],
            "per_call_after": per_call,
            "max_after": max(trips),
        },
        "facilitator_round_trips": median(t["facilitator_round_trips"] for t in timings),
        "jobs": jobs,
        "checks": [
            check("paid: gateway time p50", "< 10 ms", f"{gw50:.2f} ms", gw50 < 10),
            check("paid: gateway CPU per call (/proc)", "<= 5 ms", f"{cpu_ms:.1f} ms", cpu_ms <= 5),
            check(
                "paid: upstream round trips per call (cached requirements)",
                "1",
                f"{per_call:g}",
                max(trips) == 1,
            ),
        ],
    }
