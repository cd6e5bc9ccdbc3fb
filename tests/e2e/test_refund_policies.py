"""X402R_REFUND_POLICY decides who carries a failed job: the operator (refund) or the client.

`job_fails`: the upstream took our payment and then failed the job. `payment_loop`: the
upstream refused our payment (402 again), so it never charged us. For each policy the job's
end state, the refund, every party's balance and the ledger are checked against the chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import LedgerEntry
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    MONEY_PATH,
    PRICE,
    REFUNDED_UPSTREAM_CHARGED,
    REFUNDED_UPSTREAM_NOT_CHARGED,
    UPSTREAM_PRICE,
    balances,
    change,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free

POLICIES = ["full", "if_upstream_not_charged", "off"]
FAULTS: dict[str, dict[str, Any]] = {
    "job_fails": {"job_fails": "content policy violation"},
    "payment_loop": {"payment_loop": True},
}
ERROR_CODES = {"job_fails": "upstream_job_failed", "payment_loop": "upstream_payment_refused"}

# Balance changes per outcome.
KEPT_UPSTREAM_CHARGED = {
    PAYER: -PRICE,
    OPERATOR: PRICE,
    HOT_WALLET: -UPSTREAM_PRICE,
    UPSTREAM_PAYEE: UPSTREAM_PRICE,
}
KEPT_UPSTREAM_NOT_CHARGED = {PAYER: -PRICE, OPERATOR: PRICE, HOT_WALLET: 0, UPSTREAM_PAYEE: 0}

EXPECTED: dict[tuple[str, str], tuple[str, dict[int, int]]] = {
    ("full", "job_fails"): ("refunded", REFUNDED_UPSTREAM_CHARGED),
    ("full", "payment_loop"): ("refunded", REFUNDED_UPSTREAM_NOT_CHARGED),
    ("if_upstream_not_charged", "job_fails"): ("failed", KEPT_UPSTREAM_CHARGED),
    ("if_upstream_not_charged", "payment_loop"): ("refunded", REFUNDED_UPSTREAM_NOT_CHARGED),
    ("off", "job_fails"): ("failed", KEPT_UPSTREAM_CHARGED),
    ("off", "payment_loop"): ("failed", KEPT_UPSTREAM_NOT_CHARGED),
}
FINAL = ("refunded", "failed", "needs_attention", "completed")


@pytest.fixture(scope="module")
def policy_world(make_module_world: WorldMaker, module_db: str) -> World:
    """One world; its gateway is restarted for each refund policy."""
    return make_module_world(
        job_delay_s=0.5,
        database_url=module_db,
        X402R_UPSTREAM_TIMEOUT_S="10",
        X402R_FACILITATOR_TIMEOUT_S="10",
    )


@pytest.fixture(scope="module", params=POLICIES)
def policy(request: pytest.FixtureRequest, policy_world: World) -> str:
    """The refund policy the gateway runs with (restarted with it)."""
    name = str(request.param)
    policy_world.gateways[0].stop()
    policy_world.start_gateway(0, extra_env={"X402R_REFUND_POLICY": name})
    return name


@pytest.fixture
def world(policy_world: World, policy: str) -> Iterator[World]:
    """The policy world with no upstream faults before and after each test."""
    yield from fault_free(policy_world)


async def final_view(world: World, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Long-poll the job until its state (not just its status) can no longer change."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            job: dict[str, Any] = (
                await http.get(f"{world.gateway_url()}/v1/jobs/{job_id}", params={"wait": 5})
            ).json()
            if job["state"] in FINAL:
                return job
            assert loop.time() < deadline, job
            await asyncio.sleep(0.2)


async def ledger_of(module_db: str, job_id: str) -> list[tuple[str, int]]:
    """(kind, amount) of a job's ledger rows, in order."""
    engine = create_async_engine(module_db)
    try:
        async with engine.connect() as conn:
            stmt = (
                select(LedgerEntry.kind, LedgerEntry.amount)
                .where(LedgerEntry.job_id == job_id)
                .order_by(LedgerEntry.id)
            )
            return [(r.kind, r.amount) for r in (await conn.execute(stmt)).all()]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_refund_policy_decides_who_carries_a_failed_job(
    world: World, module_db: str, policy: str, fault: str
) -> None:
    state, expected_moves = EXPECTED[(policy, fault)]
    url = world.gateway_url() + "/v1/images/edit"
    payment = await sign_payment(url, key_hex(PAYER))
    world.set_faults(FAULTS[fault])
    before = balances(world, MONEY_PATH)

    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(url, json=EDIT_BODY, headers=payment)

    body = answer.json()
    if fault == "payment_loop":  # refused while the client waits: a 5xx naming the job
        assert answer.status_code == 502, answer.text
        assert body["error"] == "upstream_payment_refused"
        job_id = body["details"]["jobId"]
    else:  # accepted, fails later
        assert answer.status_code == 200, answer.text
        job_id = body["jobId"]
    job = await final_view(world, job_id)

    assert job["status"] == "failed", job
    assert job["state"] == state, job
    assert job["error"]["code"] == ERROR_CODES[fault]
    assert job["payment"]["transaction"] is not None  # settle-first: the client paid first
    if state == "refunded":
        assert job["refund"]["amount"] == str(PRICE)
        assert job["refund"]["status"] == "refunded"
        assert job["refund"]["transaction"].startswith("0x")
    else:
        assert "refund" not in job, job
    after = balances(world, MONEY_PATH)
    assert change(before, after) == expected_moves

    upstream_charged = fault == "job_fails"
    assert world.upstream_stats()["paid_submits"] == int(upstream_charged)
    kinds = [("charge", PRICE)]
    if upstream_charged:
        kinds.append(("upstream", UPSTREAM_PRICE))
    if state == "refunded":
        kinds.append(("refund", PRICE))
    assert sorted(await ledger_of(module_db, job_id)) == sorted(kinds)
    sums = await audit(module_db, world.rpc_url, [job_id])
    assert sums["margin"] == expected_moves[OPERATOR] + expected_moves[HOT_WALLET]
    await audit(module_db, world.rpc_url)
