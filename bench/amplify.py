"""Scenario 3: many clients polling one job in progress; how often is the upstream asked?"""

from __future__ import annotations

from typing import Any

from bench.measure import check, expect
from bench.profile import Profile
from bench.stage import CLIENT_CORE, POLL_INTERVAL_S, Stage
from bench.wrk import lua_paced, run_wrk

POLLS_PER_SECOND = 10


def run(stage: Stage, profile: Profile, *, job_id: str, upstream_job_id: str) -> dict[str, Any]:
    """`poll_clients` connections, each polling 10x/s for `poll_duration_s`."""
    url = f"{stage.w.gateway_url(0)}/v1/jobs/{job_id}"
    before = stage.w.upstream_stats()["status_requests_by_job"].get(upstream_job_id, 0)
    result = run_wrk(
        url,
        duration_s=profile.poll_duration_s,
        connections=profile.poll_clients,
        threads=2,
        script=lua_paced("paced", 1000 // POLLS_PER_SECOND),
        core=CLIENT_CORE,
        timeout_ms=5000,
    )
    after = stage.w.upstream_stats()["status_requests_by_job"].get(upstream_job_id, 0)
    expect(result.requests > 0, "no poll was answered")
    upstream = after - before
    # Zero would "meet" the target while measuring nothing (e.g. a job nobody polls).
    expect(upstream > 0, "the job in progress was never polled upstream: nothing was measured")
    intervals = result.duration_s / POLL_INTERVAL_S
    per_interval = upstream / intervals
    return {
        "clients": profile.poll_clients,
        "duration_s": result.duration_s,
        "client_polls": result.requests,
        "client_polls_per_s": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.non_2xx_3xx + result.socket_errors,
        "poll_interval_s": POLL_INTERVAL_S,
        "upstream_requests": upstream,
        "upstream_per_interval": per_interval,
        "amplification": upstream / result.requests if result.requests else 0.0,
        "checks": [
            check(
                "upstream status requests per poll interval",
                "<= 1",
                f"{per_interval:.2f} ({upstream} for {result.requests} client polls)",
                per_interval <= 1.0,
            )
        ],
    }
