"""The operator's retry and refund of parked jobs, end to end: the money lands on chain once.

The gateway runs without a chain to ask (`X402R_RPC_URL` empty, as an operator might start
it) and with the default refund policy, so two real faults park jobs for the operator:
- the upstream takes our payment and answers 5xx: whether it charged us cannot be known, the
  job is parked charged; the operator refunds it (admin API) and the worker pays it back;
- the facilitator's settle answers are lost: the settlement is parked unresolved; the operator
  configures the RPC and retries it (the real CLI); the worker finds the first settlement on
  chain, buys the upstream and serves the job, the client charged once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job, LedgerEntry, OperatorAction
from sandbox.world import PAYER, World, key_hex
from tests.helpers import (
    ADMIN_TOKEN,
    EDIT_BODY,
    MONEY_PATH,
    PRICE,
    REFUNDED_UPSTREAM_CHARGED,
    SERVED,
    balances,
    change,
    payment_nonce,
    run_until_resolved,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def parking_world(make_module_world: WorldMaker, module_db: str) -> World:
    return make_module_world(
        remote_facilitator=True,
        job_delay_s=0.3,
        database_url=module_db,
        X402R_RPC_URL="",
        X402R_ALLOW_NO_RPC="true",
        X402R_ADMIN_TOKEN=ADMIN_TOKEN,
        X402R_FACILITATOR_TIMEOUT_S="5",
        X402R_UPSTREAM_TIMEOUT_S="10",
    )


@pytest.fixture
def world(parking_world: World) -> Iterator[World]:
    yield from fault_free(parking_world, facilitator=True)


async def _pay(world: World, prompt: str) -> tuple[httpx.Response, str]:
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": prompt}
    headers = await sign_payment(url, key_hex(PAYER), body)
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(url, json=body, headers=headers)
    return response, payment_nonce(headers)


async def _job(database_url: str, nonce: str) -> Any:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(Job).where(Job.pay_nonce == nonce))).one()
    finally:
        await engine.dispose()


async def _until(database_url: str, nonce: str, states: set[str], timeout: float = 60) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        job = await _job(database_url, nonce)
        if job.state in states:
            return job
        assert loop.time() < deadline, (job.state, job.error_code, job.error_message)
        await asyncio.sleep(0.3)


async def _trail(database_url: str, job_id: str) -> tuple[list[Any], list[Any]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            ledger = await conn.execute(
                select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.id)
            )
            acts = await conn.execute(select(OperatorAction).where(OperatorAction.job_id == job_id))
            return list(ledger.all()), list(acts.all())
    finally:
        await engine.dispose()


async def _act(world: World, job_id: str, action: str, reason: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{world.gateway_url()}/v1/admin/jobs/{job_id}/{action}",
            json={"reason": reason},
            headers=AUTH,
        )


async def test_a_parked_charged_job_refunded_by_the_operator_lands_on_chain_once(
    world: World,
) -> None:
    before = balances(world, MONEY_PATH)
    world.set_faults({"submit_5xx": True})  # takes our payment, then answers 500
    _, nonce = await _pay(world, "the upstream takes the money and fails")
    parked = await _until(world.database_url, nonce, {"needs_attention"})
    world.reset_upstream()
    assert parked.settle_tx is not None  # the client was charged
    assert parked.refund_amount is None

    refused = await _act(world, parked.id, "retry", "resend it")
    assert (refused.status_code, refused.json()["error"]) == (409, "job_not_retryable")
    accepted = await _act(world, parked.id, "refund", "upstream failed after charging us")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "refunding"
    twice = await _act(world, parked.id, "refund", "double click")
    assert twice.status_code == 409

    done = await _until(world.database_url, nonce, {"refunded", "needs_attention"})
    assert done.state == "refunded", (done.error_code, done.error_message)
    ledger, acts = await _trail(world.database_url, parked.id)
    assert [(e.kind, e.amount) for e in ledger] == [("charge", PRICE), ("refund", PRICE)]
    assert ledger[1].tx_hash == done.refund_tx
    assert [(a.action, a.actor) for a in acts] == [("refund", "admin-api")]
    # The client got its payment back exactly once; the upstream kept what it took.
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_CHARGED
    await audit(world.database_url, world.rpc_url, [parked.id])


def _cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **world.gateway_environment(0), **{"X402R_RPC_URL": world.rpc_url}}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "--env-file", "", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_an_unresolved_settlement_retried_with_a_chain_is_charged_once(
    world: World,
) -> None:
    before = balances(world, MONEY_PATH)
    world.set_facilitator_faults({"settle_lost": True})
    response, nonce = await _pay(world, "the settlement answer is lost")
    assert response.status_code == 503, response.text
    parked = await run_until_resolved(world.database_url, nonce)
    world.reset_facilitator()
    assert (parked.state, parked.error_code) == ("needs_attention", "settlement_unresolved")
    refused = await _act(world, parked.id, "refund", "give it back")
    assert (refused.status_code, refused.json()["error"]) == (409, "job_not_refundable")

    world.gateways[0].stop()
    world.start_gateway(0, extra_env={"X402R_RPC_URL": world.rpc_url})
    try:
        retried = _cli(world, "jobs", "retry", parked.id, "--reason", "RPC configured")
        assert retried.returncode == 0, retried.stderr
        assert "now verified" in retried.stdout
        served = await _until(world.database_url, nonce, {"completed", "needs_attention"})
        assert served.state == "completed", (served.error_code, served.error_message)
        ledger, acts = await _trail(world.database_url, parked.id)
        assert (ledger[0].kind, ledger[0].tx_hash) == ("charge", served.settle_tx)
        assert [e.kind for e in ledger] == ["charge", "upstream"]
        assert [(a.action, a.reason) for a in acts] == [("retry", "RPC configured")]
        assert change(before, balances(world, MONEY_PATH)) == SERVED  # charged once
        await audit(world.database_url, world.rpc_url, [parked.id])
    finally:
        world.gateways[0].stop()
        world.start_gateway(0)
