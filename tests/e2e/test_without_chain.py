"""Without X402R_RPC_URL nothing can tell whether an unanswered settlement went through.

The gateway then retries a bounded number of times with the same authorization (so money
moves at most once) and parks the job as `needs_attention` for the operator, instead of
retrying forever. Both cases are provoked with the facilitator's answers lost after the
transfer happened, so the money really moved and only the gateway does not know it.
"""

from __future__ import annotations

import httpx
import pytest

from app.jobs.policy import MAX_REFUND_ATTEMPTS, MAX_SETTLE_ATTEMPTS
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    moved,
    payment_nonce,
    run_until_resolved,
    sign_payment,
)
from tests.ledger_audit import audit


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


async def test_unknown_settlement_is_parked_after_bounded_retries(world: World) -> None:
    before = balances(world)
    world.set_facilitator_faults({"settle_lost": True})

    response, nonce = await _pay(world, "the answer to this settlement is lost")

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "payment_outcome_unknown"
    job = await run_until_resolved(world.database_url, nonce)
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

    job = await run_until_resolved(world.database_url, nonce)
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
