"""Scenario 6: two gateway processes on one Postgres vs one, for the 402 and the status path.

Nothing is pinned here: with two cores the load generator, Postgres and the gateways share
them, so this shows what a second replica buys on this machine, not on a bigger one.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.measure import expect
from bench.profile import Profile
from bench.stage import SERVER_CORE, Stage
from bench.wrk import WrkResult, lua_post, run_wrk
from sandbox.pay import EDIT_BODY


def _parallel(profile: Profile, urls: list[str], script: Path | None) -> dict[str, float]:
    conns = profile.connections // len(urls)

    def one(url: str, seconds: int) -> WrkResult:
        return run_wrk(url, duration_s=seconds, connections=conns, script=script, core=None)

    with ThreadPoolExecutor(len(urls)) as pool:
        list(pool.map(lambda u: one(u, profile.warmup_s), urls))
        results = list(pool.map(lambda u: one(u, profile.duration_s), urls))
    expect(all(r.requests > 0 for r in results), "a scale-out run sent no request")
    return {
        "rps": sum(r.rps for r in results),
        "p50_ms": max(r.p50_ms for r in results),
        "p99_ms": max(r.p99_ms for r in results),
    }


def run(stage: Stage, profile: Profile, *, job_id: str) -> dict[str, Any]:
    """Same connections in total, split over one or two replicas."""
    stage.start_gateway(1, core=None)
    stage.pin_gateway(0, None)
    post = lua_post(json.dumps(EDIT_BODY))
    out: dict[str, Any] = {}
    try:
        for replicas in (1, 2):
            bases = [stage.w.gateway_url(i) for i in range(replicas)]
            out[f"402_x{replicas}"] = _parallel(
                profile, [b + "/v1/images/edit" for b in bases], post
            )
            out[f"status_x{replicas}"] = _parallel(
                profile, [f"{b}/v1/jobs/{job_id}" for b in bases], None
            )
    finally:
        stage.w.gateways[1].stop()
        stage.w.gateways.pop(1)
        stage.pin_gateway(0, SERVER_CORE)
    return out
