"""/metrics counts what a scenario did, and /readyz names each failing check.

One world with a chain (embedded facilitator) and an admin token: an unpaid request, a job
paid by the SDK and served, a status read; the scrape's counters move by exactly that, and
its gauges equal the jobs table and the chain. A second replica with a hot-wallet floor above
the balance is not ready and says why.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job
from sandbox.chain import usdc_balance
from sandbox.world import HOT_WALLET, PAYER, World, address, key_hex
from tests.helpers import ADMIN_TOKEN, EDIT_BODY, paid_post, poll_until_done
from tests.worlds import WorldMaker

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EDIT = "/v1/images/edit"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def metered_world(make_module_world: WorldMaker, module_db: str) -> World:
    return make_module_world(
        job_delay_s=0.3,
        database_url=module_db,
        X402R_ADMIN_TOKEN=ADMIN_TOKEN,
        X402R_OPERATOR_CACHE_TTL_S="0",  # the scrape reads the balance as it is now
    )


async def scrape(world: World, index: int = 0) -> Samples:
    """Every sample of the gateway's /metrics, by (name, sorted labels)."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(world.gateway_url(index) + "/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_a_scrape_counts_the_scenario(metered_world: World) -> None:
    world = metered_world
    before = await scrape(world)
    async with httpx.AsyncClient(timeout=30) as http:
        unpaid = await http.post(world.gateway_url() + EDIT, json=EDIT_BODY)
    assert unpaid.status_code == 402
    response = await paid_post(world.gateway_url() + EDIT, key_hex(PAYER))  # 402, then paid
    assert response.status_code == 200, response.text
    job = await poll_until_done(response.json()["statusUrl"])
    assert job["status"] == "completed"
    after = await scrape(world)

    assert delta(before, after, "x402r_payment_required_total", route=EDIT) == 2
    assert delta(before, after, "x402r_http_requests_total", route=EDIT, method="POST",
                 status="402") == 2  # fmt: skip
    assert delta(before, after, "x402r_http_requests_total", route=EDIT, method="POST",
                 status="200") == 1  # fmt: skip
    assert delta(before, after, "x402r_http_requests_total", route="/v1/jobs/{job_id}",
                 method="GET", status="200") >= 1  # fmt: skip
    assert delta(before, after, "x402r_payments_total", step="verify", outcome="verified",
                 reason="") == 1  # fmt: skip
    assert delta(before, after, "x402r_payments_total", step="settle", outcome="settled",
                 reason="") == 1  # fmt: skip
    assert delta(before, after, "x402r_settle_seconds_count", step="settle") == 1
    assert delta(before, after, "x402r_upstream_submit_seconds_count") == 1
    assert delta(before, after, "x402r_transfers_total", kind="charge") == 1
    assert delta(before, after, "x402r_transfers_total", kind="upstream") == 1

    engine = create_async_engine(world.database_url)
    async with engine.connect() as conn:
        states = dict(
            (await conn.execute(select(Job.state, func.count()).group_by(Job.state))).all()
        )
    await engine.dispose()
    for state, count in states.items():
        assert value(after, "x402r_jobs", state=state) == count, state
    assert value(after, "x402r_jobs", state="needs_attention") == 0
    hot = address(HOT_WALLET)
    balance = value(after, "x402r_hot_wallet_balance_atomic", address=hot)
    assert balance == usdc_balance(world.rpc_url, hot)
    assert value(after, "x402r_upstream_spend_window_atomic") >= 52700
    assert value(after, "x402r_upstream_spend_cap_atomic") == 50_000_000


async def test_readiness_names_each_failing_check(metered_world: World) -> None:
    world = metered_world
    async with httpx.AsyncClient(timeout=30) as http:
        ready = await http.get(world.gateway_url() + "/readyz")
    assert ready.status_code == 200, ready.text
    body: dict[str, Any] = ready.json()
    assert body["failing"] == []
    assert set(body["checks"]) == {"database", "facilitator", "upstream", "rpc"}
    balance = usdc_balance(world.rpc_url, address(HOT_WALLET))
    world.start_gateway(1, extra_env={"X402R_HOT_WALLET_FLOOR_ATOMIC": str(balance + 1)})
    async with httpx.AsyncClient(timeout=30) as http:
        short = await http.get(world.gateway_url(1) + "/readyz")
    assert short.status_code == 503
    assert short.json()["failing"] == ["hot_wallet"]
    assert short.json()["checks"]["hot_wallet"].startswith("error: balance ")
    world.gateways[1].stop()
