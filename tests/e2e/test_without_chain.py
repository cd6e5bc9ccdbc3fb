"""Without X402R_RPC_URL nothing can tell whether an unanswered settlement went through.

The gateway then retries a bounded number of times with the same authorization (so money
moves at most once) and parks the job as `needs_attention` for the operator, instead of
retrying forever. Both cases are provoked with the facilitator's answers lost after the
transfer happened, so the money really moved and only the gateway does not know it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job
from app.jobs.policy import MAX_REFUND_ATTEMPTS, MAX_SETTLE_ATTEMPTS
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    moved,
    payment_nonce,
    sign_payment,
)
from tests.ledger_audit import audit

RETRYING = ("verified", "refunding")  # states a lost answer leaves a job in, waiting to retry


@pytest.fixture
def world(blind_world: World) -> World:
    """The module's world without a chain, with no faults (see `blind_world`)."""
    return blind_world


async def _pay(world: World, prompt: str) -> tuple[httpx.Response, str]:
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": prompt}
    headers = await sign_payment(url, key_hex(PAYER), body)
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(url, json=body, headers=headers)
    return response, payment_nonce(headers)


async def _settle_down(database_url: str, nonce: str, timeout: float = 90) -> Job:
    """Let time pass: make each scheduled retry due at once, until the job stops retrying."""
    engine = create_async_engine(database_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            async with engine.begin() as conn:
                job = (await conn.execute(select(Job).where(Job.pay_nonce == nonce))).one()
                if job.state not in RETRYING and job.state != "submitted":
                    return job  # type: ignore[return-value]
                assert loop.time() < deadline, (job.state, job.error_code)
                if (job.state in RETRYING and job.error_code is not None) or job.refund_attempts:
                    await conn.execute(
                        update(Job)
                        .where(Job.id == job.id, Job.state.in_(RETRYING))
                        .values(next_check_at=datetime.now(UTC) - timedelta(seconds=1))
                    )
            await asyncio.sleep(0.4)
    finally:
        await engine.dispose()


async def test_unknown_settlement_is_parked_after_bounded_retries(world: World) -> None:
    before = balances(world)
    world.set_facilitator_faults({"settle_lost": True})

    response, nonce = await _pay(world, "the answer to this settlement is lost")

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "payment_outcome_unknown"
    job = await _settle_down(world.database_url, nonce)
    assert job.state == "needs_attention", (job.state, job.error_code)
    assert job.error_code == "settlement_unresolved"
    assert job.settle_attempts >= MAX_SETTLE_ATTEMPTS
    assert job.upstream_payment_header is None  # nothing bought upstream for it
    # The first settlement did move the money (its answer was lost); none of the retries did.
    assert moved(world, before) == {PAYER: -PRICE, OPERATOR: PRICE}
    await audit(world.database_url, world.rpc_url)


async def test_unknown_refund_is_parked_after_bounded_retries(world: World) -> None:
    before = balances(world)
    world.set_faults({"job_fails": "content policy violation"})

    response, nonce = await _pay(world, "the upstream fails this job, the refund answer is lost")
    assert response.status_code == 200, response.text
    world.set_facilitator_faults({"settle_lost": True})  # from here on: the refund's answers

    job = await _settle_down(world.database_url, nonce)
    assert job.state == "needs_attention", (job.state, job.error_code)
    assert job.error_code == "refund_unresolved"
    assert job.refund_attempts >= MAX_REFUND_ATTEMPTS
    assert job.refund_nonce is not None
    assert job.refund_nonce in (job.error_message or "")  # what the operator looks for
    # The refund was paid once, by the first attempt; the retries resent the same authorization.
    assert moved(world, before) == {
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE - PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    await audit(world.database_url, world.rpc_url)
