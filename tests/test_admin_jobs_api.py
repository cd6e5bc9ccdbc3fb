"""The admin jobs, report and wallet API, the dashboard page and the metrics scrape, on a real
Postgres database with a seeded mix of jobs (in-process app, no workers)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from app.jobs.models import JobState
from app.main import create_app
from tests import operator_seed as seed
from tests.helpers import ADMIN_TOKEN
from tests.inprocess_app import client_for
from tests.settings_factory import make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PRICE, UPSTREAM = 63240, 52700
PAYER = "0x" + "ab" * 20
S = JobState


@pytest.fixture(scope="module")
async def app(module_db: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url=module_db, admin_token=ADMIN_TOKEN, workers_enabled=False)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def mix(app: FastAPI) -> dict[str, Any]:
    engine = app.state.gateway.engine
    async with engine.begin() as conn:
        served = [
            await seed.job(conn, S.COMPLETED, payer=PAYER, upstream=UPSTREAM) for _ in range(5)
        ]
        parked = await seed.job(
            conn, S.NEEDS_ATTENTION, payer=PAYER, error_code="upstream_unreachable"
        )
        refused = await seed.job(conn, S.NEEDS_ATTENTION, payer=PAYER, error_code="refund_refused")
        raced = await seed.job(conn, S.NEEDS_ATTENTION, payer=PAYER, error_code="upstream_timeout")
        key = await seed.api_key(conn, "team-b", budget=500_000, spent=PRICE)
        keyed = await seed.key_paid_job(conn, key, S.COMPLETED, payer=PAYER, amount=PRICE)
    return {
        "served": served,
        "parked": parked,
        "refused": refused,
        "raced": raced,
        "keyed": keyed,
        "key": key,
    }


async def _get(app: FastAPI, path: str, **params: Any) -> Any:
    async with client_for(app) as http:
        response = await http.get(path, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


async def test_pages_cover_every_job_once_newest_first(app: FastAPI, mix: dict[str, Any]) -> None:
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await _get(app, "/v1/admin/jobs", **params)
        seen += page["jobs"]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len({j["id"] for j in seen}) == 9
    assert [j["createdAt"] for j in seen] == sorted((j["createdAt"] for j in seen), reverse=True)
    async with client_for(app) as http:
        bad = await http.get("/v1/admin/jobs", params={"cursor": "garbage!"}, headers=AUTH)
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_cursor")
        assert (await http.get("/v1/admin/jobs")).status_code == 401
        too_many = await http.get("/v1/admin/jobs", params={"limit": 1000}, headers=AUTH)
        assert too_many.status_code == 422


async def test_filters_and_search(app: FastAPI, mix: dict[str, Any]) -> None:
    parked = await _get(app, "/v1/admin/jobs", state="needs_attention")
    assert {j["id"] for j in parked["jobs"]} == {
        mix["parked"].id,
        mix["refused"].id,
        mix["raced"].id,
    }
    flags = {j["id"]: j["actions"] for j in parked["jobs"]}
    assert flags[mix["parked"].id] == {"retry": False, "refund": True}
    naive = await _get(app, "/v1/admin/jobs", since="2020-01-01T00:00:00", limit=100)
    assert len(naive["jobs"]) == 9  # a time without a zone is UTC
    later = await _get(app, "/v1/admin/report", since="2999-01-01T00:00:00")
    assert later["totals"]["revenue"] == 0
    by_key = await _get(app, "/v1/admin/jobs", key="team-b")
    assert [j["id"] for j in by_key["jobs"]] == [mix["keyed"].id]
    one = mix["served"][2]
    for term in (one.id, one.settle_tx, one.upstream_tx):
        found = await _get(app, "/v1/admin/jobs", q=term)
        assert [j["id"] for j in found["jobs"]] == [one.id], term
    by_payer = await _get(app, "/v1/admin/jobs", q=PAYER.upper(), limit=100)
    assert len(by_payer["jobs"]) == 9  # addresses match whatever their case


async def test_job_trail_and_actions(app: FastAPI, mix: dict[str, Any]) -> None:
    trail = await _get(app, f"/v1/admin/jobs/{mix['served'][0].id}")
    assert [(e["kind"], e["txHash"]) for e in trail["ledger"]] == [
        ("charge", mix["served"][0].settle_tx),
        ("upstream", mix["served"][0].upstream_tx),
    ]
    keyed = await _get(app, f"/v1/admin/jobs/{mix['keyed'].id}")
    assert [(e["kind"], e["amount"]) for e in keyed["keyLedger"]] == [("debit", str(PRICE))]
    assert keyed["ledger"] == []
    async with client_for(app) as http:
        url = f"/v1/admin/jobs/{mix['parked'].id}"
        assert (await http.post(url + "/refund", json={}, headers=AUTH)).status_code == 422
        refused = await http.post(url + "/retry", json={"reason": "x"}, headers=AUTH)
        assert (refused.status_code, refused.json()["error"]) == (409, "job_not_retryable")
        done = await http.post(url + "/refund", json={"reason": "upstream down"}, headers=AUTH)
        assert done.status_code == 200, done.text
        assert (done.json()["state"], done.json()["refundAmount"]) == ("refunding", str(PRICE))
        assert [(a["action"], a["reason"], a["actor"]) for a in done.json()["operatorActions"]] == [
            ("refund", "upstream down", "admin-api")
        ]
        again = await http.post(url + "/refund", json={"reason": "again"}, headers=AUTH)
        assert (again.status_code, again.json()["error"]) == (409, "job_not_parked")
        missing = await http.post("/v1/admin/jobs/job_x/retry", json={"reason": "x"}, headers=AUTH)
        assert (missing.status_code, missing.json()["error"]) == (404, "job_not_found")


async def test_report_wallet_dashboard_and_metrics(app: FastAPI, mix: dict[str, Any]) -> None:
    report = await _get(app, "/v1/admin/report", by="key")
    totals = report["totals"]
    assert totals["charges"] == 8 * PRICE
    assert totals["keyDebits"] == PRICE
    assert totals["upstreamSpend"] == 5 * UPSTREAM
    rows = {r["key"]: r for r in report["rows"]}
    assert rows[mix["key"]]["keyName"] == "team-b"
    assert rows[mix["key"]]["budgetLeft"] == 500_000 - PRICE
    assert rows["x402"]["revenue"] == 8 * PRICE
    wallet = await _get(app, "/v1/admin/wallet")
    assert wallet["balance"] is None
    assert "no RPC configured" in wallet["balanceError"]
    assert wallet["dailyCap"] == "50000000"
    async with client_for(app) as http:
        page = await http.get("/admin")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp  # only the page's own script and style, by hash
        assert "<script>" in page.text
        assert "/*JS*/" not in page.text
        # Nothing loaded from elsewhere: the only link is the empty inline icon.
        assert re.findall(r'(?:src|href)="([^"]*)"', page.text) == ["data:,"]
        await http.request("BREW", "/coffee")  # made-up methods share one label
        metrics = (await http.get("/metrics", headers=AUTH)).text
    assert 'method="other",route="unmatched"' in metrics
    assert "BREW" not in metrics
    assert 'x402r_jobs{state="completed"} 6.0' in metrics
    assert 'x402r_key_budget_remaining_atomic{key="team-b"} 436760.0' in metrics
    assert 'x402r_http_requests_total{method="GET",route="/v1/admin/wallet",status="200"}' in (
        metrics
    )


async def test_two_refunds_at_once_move_the_job_once(app: FastAPI, mix: dict[str, Any]) -> None:
    url = f"/v1/admin/jobs/{mix['raced'].id}/refund"
    async with client_for(app) as http:
        answers = await asyncio.gather(
            *(http.post(url, json={"reason": f"click {i}"}, headers=AUTH) for i in range(4))
        )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    trail = await _get(app, f"/v1/admin/jobs/{mix['raced'].id}")
    assert trail["state"] == "refunding"
    assert len(trail["operatorActions"]) == 1
