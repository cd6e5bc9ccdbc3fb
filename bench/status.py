"""Scenario 2: `GET /v1/jobs/{id}` vs bare FastAPI + ORM `session.get` on the same Postgres."""

from __future__ import annotations

import json
from typing import Any

import httpx

from bench.measure import check, expect, measure_all, ratio, row, write_spec
from bench.profile import Profile
from bench.stage import Stage
from bench.wrk import lua_paths, lua_script


def _get(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=10)
    expect(response.status_code == 200, f"{url} gave {response.status_code}")
    return response


def run(
    stage: Stage, profile: Profile, *, processing: str, completed: str, cold: list[str]
) -> dict[str, Any]:
    """Gateway and baseline on one job in progress, one completed job, and many cold jobs."""
    gateway = stage.w.gateway_url(0)
    base = stage.start_baseline(
        "orm",
        write_spec("orm", {"database_url": stage.database_url, "base_url": gateway}),
    )
    jobs = {"processing": processing, "completed": completed}
    for name, job_id in jobs.items():
        ours, theirs = _get(f"{gateway}/v1/jobs/{job_id}"), _get(f"{base}/v1/jobs/{job_id}")
        expect(ours.json() == theirs.json(), f"{name}: gateway and baseline disagree on the job")
    done = _get(f"{gateway}/v1/jobs/{completed}")
    etag = done.headers.get("etag", "")
    again = httpx.get(f"{gateway}/v1/jobs/{completed}", headers={"If-None-Match": etag})
    revalidates = bool(etag) and again.status_code == 304
    cold_script = lua_paths("cold", [f"/v1/jobs/{job_id}" for job_id in cold])
    targets = {
        "gw_processing": (f"{gateway}/v1/jobs/{processing}", None),
        "base_processing": (f"{base}/v1/jobs/{processing}", None),
        "gw_completed": (f"{gateway}/v1/jobs/{completed}", None),
        "base_completed": (f"{base}/v1/jobs/{completed}", None),
        "gw_cold": (gateway + "/", cold_script),
        "base_cold": (base + "/", cold_script),
    }
    if revalidates:
        header = f'wrk.headers["If-None-Match"] = {json.dumps(etag)}\n'
        targets["gw_304"] = (f"{gateway}/v1/jobs/{completed}", lua_script("revalidate", header))
    try:
        r = measure_all(profile, targets)
    finally:
        stage.stop_baselines()
    errors = {key: res.non_2xx_3xx + res.socket_errors for key, res in r.items()}
    proc = ratio(r["gw_processing"].rps, r["base_processing"].rps)
    comp = ratio(r["gw_completed"].rps, r["base_completed"].rps)
    cold_x = ratio(r["gw_cold"].rps, r["base_cold"].rps)
    p99 = r["gw_processing"].p99_ms
    n = len(cold)
    names = {
        "gw_processing": "gateway, job in progress",
        "base_processing": "baseline ORM `session.get`, same job",
        "gw_completed": "gateway, completed job",
        "base_completed": "baseline ORM `session.get`, same job",
        "gw_304": "gateway, completed job, `If-None-Match` → 304",
        "gw_cold": f"gateway, {n} distinct jobs in progress (cache misses)",
        "base_cold": f"baseline ORM `session.get`, same {n} jobs",
    }
    vs = {"gw_processing": proc, "gw_completed": comp, "gw_cold": cold_x}
    rows = [
        row(
            names[key],
            r[key],
            key=key,
            errors=errors[key],
            **({"vs": vs[key]} if key in vs else {}),
        )
        for key in names
        if key in r
    ]
    return {
        "rows": rows,
        "ratios": {"processing": proc, "completed": comp, "cold": cold_x},
        "checks": [
            check("status: job in progress vs baseline", ">= 1.5x", f"{proc:.1f}x", proc >= 1.5),
            check("status: job in progress p99", "<= 20 ms", f"{p99:.1f} ms", p99 <= 20),
            check("status: completed job vs baseline", ">= 5x", f"{comp:.1f}x", comp >= 5),
            check(
                "status: error answers under load (gateway)",
                "0",
                str(sum(v for k, v in errors.items() if k.startswith("gw_"))),
                not any(v for k, v in errors.items() if k.startswith("gw_")),
            ),
            check(
                "status: completed job has a strong ETag, `If-None-Match` gets 304",
                "yes",
                "yes" if revalidates else "no",
                revalidates,
            ),
        ],
    }
