"""Refunds a hostile payer can farm: the default policy and the per-payer daily limit.

A request the upstream accepts and then fails costs the operator the upstream price. By
default the client is refunded only what the upstream did not charge us, so such a failure
costs the client its payment. Under `full`, each payer gets at most N operator-paid refunds
per day; past that the job fails without refund, recorded as `refund_limit_reached`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.chain import usdc_balance
from sandbox.world import HOT_WALLET, OPERATOR, UPSTREAM_PAYEE, World
from tests.helpers import (
    ADMIN_TOKEN,
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    db_rows,
    funded_payer,
    operator_side,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker

LIMIT = 2
FINAL = ("refunded", "failed", "needs_attention", "completed")


@pytest.fixture(scope="module")
def abuse_world(make_module_world: WorldMaker, module_db: str) -> World:
    """A gateway on the default refund policy (restarted with `full` by one test)."""
    return make_module_world(
        job_delay_s=0.3,
        database_url=module_db,
        X402R_UPSTREAM_TIMEOUT_S="10",
        X402R_FACILITATOR_TIMEOUT_S="10",
        X402R_ADMIN_TOKEN=ADMIN_TOKEN,
    )


@pytest.fixture
def world(abuse_world: World) -> Iterator[World]:
    """Every upstream job fails after the upstream took our payment."""
    abuse_world.reset_upstream()
    abuse_world.set_faults({"job_fails": "content policy violation"})
    yield abuse_world
    abuse_world.reset_upstream()


async def failed_job(world: World, key: str, prompt: str) -> dict[str, Any]:
    """Pay for an edit the upstream accepts then fails; the job once its state is final."""
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": prompt}
    headers = await sign_payment(url, key, body)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(url, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["jobId"]
        while True:
            job: dict[str, Any] = (
                await http.get(f"{world.gateway_url()}/v1/jobs/{job_id}", params={"wait": 5})
            ).json()
            if job["state"] in FINAL:
                return job
            assert loop.time() < deadline, job
            await asyncio.sleep(0.2)


async def test_default_policy_does_not_refund_what_the_upstream_charged(world: World) -> None:
    key, payer = funded_payer(world, PRICE)
    before = operator_side(world)

    job = await failed_job(world, key, "default policy")

    assert job["state"] == "failed", job
    assert job["error"]["code"] == "upstream_job_failed"
    assert "refund" not in job
    assert usdc_balance(world.rpc_url, payer) == 0
    after = operator_side(world)
    assert {i: after[i] - before[i] for i in after} == {
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    _, ledger = await db_rows(world.database_url, job["jobId"])
    assert sorted((e.kind, e.amount) for e in ledger) == [
        ("charge", PRICE),
        ("upstream", UPSTREAM_PRICE),
    ]
    await audit(world.database_url, world.rpc_url)


async def test_full_policy_refunds_a_payer_at_most_n_times_a_day(world: World) -> None:
    world.gateways[0].stop()
    world.start_gateway(
        0, extra_env={"X402R_REFUND_POLICY": "full", "X402R_REFUNDS_PER_PAYER_PER_DAY": str(LIMIT)}
    )
    world.reset_upstream()
    world.set_faults({"job_fails": "content policy violation"})
    key, payer = funded_payer(world, PRICE)  # refunds give it back, so one price suffices
    other_key, other = funded_payer(world, PRICE)
    before = operator_side(world)

    jobs = [await failed_job(world, key, f"abuse {i}") for i in range(LIMIT + 1)]
    others = await failed_job(world, other_key, "another payer")

    for job in jobs[:LIMIT]:
        assert job["state"] == "refunded", job
        assert job["refund"]["amount"] == str(PRICE)
    last = jobs[LIMIT]
    assert last["state"] == "failed", last
    assert last["error"]["code"] == "refund_limit_reached"
    assert "content policy violation" in last["error"]["message"]
    assert "refund" not in last
    assert others["state"] == "refunded", others  # the limit is per payer
    assert usdc_balance(world.rpc_url, payer) == 0
    assert usdc_balance(world.rpc_url, other) == PRICE
    after = operator_side(world)
    bought = LIMIT + 2
    refunded = LIMIT + 1
    assert {i: after[i] - before[i] for i in after} == {
        OPERATOR: bought * PRICE,
        HOT_WALLET: -bought * UPSTREAM_PRICE - refunded * PRICE,
        UPSTREAM_PAYEE: bought * UPSTREAM_PRICE,
    }
    _, ledger = await db_rows(world.database_url, last["jobId"])
    assert sorted((e.kind, e.amount) for e in ledger) == [
        ("charge", PRICE),
        ("upstream", UPSTREAM_PRICE),
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        summary = await http.get(
            world.gateway_url() + "/v1/admin/summary",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert summary.json()["refundsWithheld"] == 1, summary.text
    await audit(world.database_url, world.rpc_url)
