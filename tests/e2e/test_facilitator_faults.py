"""Facilitator faults: an unavailable facilitator charges nothing, an unknown settlement is
never answered with a fresh 402, and every transfer that did land is found on chain and
charged exactly once.

The gateway talks to the standalone facilitator (remote mode), whose faults are switched per
test. The simulated upstream settles through the same facilitator, but only after the gateway
has verified and settled the client's payment, so one-shot faults always hit the gateway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_utils.crypto import keccak
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job, LedgerEntry
from sandbox.chain import (
    USDC_ADDRESS,
    authorization_state,
    rpc_call,
)
from sandbox.world import PAYER, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    MONEY_PATH,
    NOTHING_MOVED,
    PRICE,
    SERVED,
    UPSTREAM_PRICE,
    balances,
    change,
    payer_and_nonce,
    poll_until_done,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free, pause_mining, resume_mining

FACILITATOR_TIMEOUT_S = 5
AUTHORIZATION_USED = "0x" + keccak(text="AuthorizationUsed(address,bytes32)").hex()


@pytest.fixture(scope="module")
def remote_world(make_module_world: WorldMaker, module_db: str) -> World:
    """A gateway that uses the standalone facilitator and gives up on it after 5 s."""
    return make_module_world(
        remote_facilitator=True,
        job_delay_s=0.5,
        database_url=module_db,
        X402R_FACILITATOR_TIMEOUT_S=str(FACILITATOR_TIMEOUT_S),
        X402R_UPSTREAM_TIMEOUT_S="10",
    )


@pytest.fixture
def world(remote_world: World) -> Iterator[World]:
    """The remote-facilitator world, with no faults and a mining chain around each test."""
    yield from fault_free(remote_world, facilitator=True, mining=True)


def authorization_tx(rpc_url: str, payer: str, nonce: str) -> str | None:
    """The transaction that used (payer, nonce), read from the token's AuthorizationUsed event."""
    logs = rpc_call(
        rpc_url,
        "eth_getLogs",
        [
            {
                "address": USDC_ADDRESS,
                "fromBlock": "0x0",
                "toBlock": "latest",
                "topics": [AUTHORIZATION_USED, "0x" + "00" * 12 + payer.lower()[2:], nonce],
            }
        ],
    )
    return str(logs[0]["transactionHash"]) if logs else None


async def jobs_of(module_db: str, payer: str, nonce: str) -> list[Any]:
    """Every job row bought by this payment."""
    engine = create_async_engine(module_db)
    try:
        async with engine.connect() as conn:
            stmt = select(Job).where(Job.payer == payer, Job.pay_nonce == nonce)
            return list((await conn.execute(stmt)).all())
    finally:
        await engine.dispose()


async def ledger_of(module_db: str, job_id: str) -> list[tuple[str, int, str]]:
    """(kind, amount, tx) of a job's ledger rows, in order."""
    engine = create_async_engine(module_db)
    try:
        async with engine.connect() as conn:
            stmt = (
                select(LedgerEntry.kind, LedgerEntry.amount, LedgerEntry.tx_hash)
                .where(LedgerEntry.job_id == job_id)
                .order_by(LedgerEntry.id)
            )
            return [(r.kind, r.amount, r.tx_hash) for r in (await conn.execute(stmt)).all()]
    finally:
        await engine.dispose()


async def post(world: World, payment: dict[str, str]) -> httpx.Response:
    """Send the edit with a (re)used payment header."""
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            world.gateway_url() + "/v1/images/edit", json=EDIT_BODY, headers=payment
        )


def assert_unknown(response: httpx.Response) -> None:
    """A 503 that tells the client to retry with the same payment — never a 402."""
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "payment_outcome_unknown", response.text
    assert int(response.headers["Retry-After"]) > 0


async def retry_until_served(
    world: World, payment: dict[str, str], first: httpx.Response, timeout: float = 40
) -> httpx.Response:
    """Retry the same payment, honouring Retry-After, while the outcome is unknown."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    response = first
    while response.status_code != 200:
        assert_unknown(response)
        assert loop.time() < deadline, f"still unknown after {timeout}s: {response.text}"
        await asyncio.sleep(float(response.headers["Retry-After"]))
        response = await post(world, payment)
    return response


async def assert_served_once(
    world: World, module_db: str, payment: dict[str, str], job_id: str, before: dict[int, int]
) -> None:
    """The job completed, the payer was charged once, with the real transaction, and audited."""
    payer, nonce = payer_and_nonce(payment)
    try:
        job = await poll_until_done(f"{world.gateway_url()}/v1/jobs/{job_id}", timeout=40)
    except AssertionError:
        rows = await jobs_of(module_db, payer, nonce)
        seen = [(r.state, r.error_code, r.error_message, r.upstream_attempts) for r in rows]
        raise AssertionError(
            f"job {job_id} never finished: {seen} {world.upstream_stats()}"
        ) from None
    assert job["status"] == "completed", json.dumps(job)
    tx = authorization_tx(world.rpc_url, payer, nonce)
    assert tx is not None
    assert job["payment"]["transaction"] == tx
    rows = await jobs_of(module_db, payer, nonce)
    assert [row.id for row in rows] == [job_id]
    assert rows[0].settle_tx == tx
    ledger = await ledger_of(module_db, job_id)
    assert [(kind, amount) for kind, amount, _ in ledger] == [
        ("charge", PRICE),
        ("upstream", UPSTREAM_PRICE),
    ]
    assert ledger[0][2] == tx
    assert change(before, balances(world, MONEY_PATH)) == SERVED
    await audit(module_db, world.rpc_url)


@pytest.mark.parametrize(
    "faults",
    [
        {"verify_5xx": {"times": 1}},
        {"verify_timeout": {"times": 1, "value": FACILITATOR_TIMEOUT_S + 2}},
    ],
    ids=["verify-5xx", "verify-timeout"],
)
async def test_verify_fault_charges_nothing_and_the_same_payment_works_after(
    world: World, module_db: str, faults: dict[str, Any]
) -> None:
    payment = await sign_payment(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    payer, nonce = payer_and_nonce(payment)
    before = balances(world, MONEY_PATH)
    submits = world.upstream_stats()["paid_submits"]
    world.set_facilitator_faults(faults)

    refused = await post(world, payment)

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "facilitator_unavailable"
    assert "Retry-After" in refused.headers
    assert change(before, balances(world, MONEY_PATH)) == NOTHING_MOVED
    assert not authorization_state(world.rpc_url, payer, nonce)
    assert await jobs_of(module_db, payer, nonce) == []
    assert world.upstream_stats()["paid_submits"] == submits

    served = await post(world, payment)

    assert served.status_code == 200, served.text
    await assert_served_once(world, module_db, payment, served.json()["jobId"], before)
    assert world.upstream_stats()["paid_submits"] == submits + 1


async def test_settle_5xx_is_an_unknown_outcome_and_the_retry_is_charged_once(
    world: World, module_db: str
) -> None:
    payment = await sign_payment(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    payer, nonce = payer_and_nonce(payment)
    before = balances(world, MONEY_PATH)
    submits = world.upstream_stats()["paid_submits"]
    world.set_facilitator_faults({"settle_5xx": {"times": 1}})

    first = await post(world, payment)

    assert_unknown(first)
    assert change(before, balances(world, MONEY_PATH)) == NOTHING_MOVED
    assert not authorization_state(world.rpc_url, payer, nonce)
    assert world.upstream_stats()["paid_submits"] == submits
    [row] = await jobs_of(module_db, payer, nonce)
    assert row.state == "verified"
    assert row.settle_tx is None

    served = await retry_until_served(world, payment, first)

    assert served.json()["jobId"] == row.id
    await assert_served_once(world, module_db, payment, row.id, before)
    assert world.upstream_stats()["paid_submits"] == submits + 1


@pytest.mark.parametrize(
    "faults",
    [
        {"settle_lost": {"times": 1}},
        {"settle_timeout": {"times": 1, "value": FACILITATOR_TIMEOUT_S + 2}},
        {"settle_garbage": {"times": 1}},
    ],
    ids=["lost-answer", "answer-after-timeout", "garbage-answer"],
)
async def test_settlement_that_landed_without_an_answer_is_found_on_chain(
    world: World, module_db: str, faults: dict[str, Any]
) -> None:
    payment = await sign_payment(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    payer, nonce = payer_and_nonce(payment)
    before = balances(world, MONEY_PATH)
    submits = world.upstream_stats()["paid_submits"]
    world.set_facilitator_faults(faults)

    first = await post(world, payment)

    # The transfer landed: the gateway may find it on chain right away (200) or answer that
    # the outcome is unknown; a fresh 402 (which makes clients pay twice) is never right.
    assert first.status_code in (200, 503), first.text
    assert authorization_state(world.rpc_url, payer, nonce)
    served = await retry_until_served(world, payment, first)
    [row] = await jobs_of(module_db, payer, nonce)
    assert served.json()["jobId"] == row.id
    again = await post(world, payment)
    assert again.status_code == 200, again.text
    assert again.json()["jobId"] == row.id
    await assert_served_once(world, module_db, payment, row.id, before)
    assert world.upstream_stats()["paid_submits"] == submits + 1


@pytest.mark.parametrize("client_retries", [True, False], ids=["client-retry", "worker-alone"])
async def test_settlement_confirmed_after_the_timeout_is_reconciled(
    world: World, module_db: str, client_retries: bool
) -> None:
    """Base can confirm later than the facilitator timeout: 503, then the chain decides."""
    payment = await sign_payment(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    payer, nonce = payer_and_nonce(payment)
    before = balances(world, MONEY_PATH)
    submits = world.upstream_stats()["paid_submits"]
    pause_mining(world)

    first = await post(world, payment)

    assert_unknown(first)
    [row] = await jobs_of(module_db, payer, nonce)
    assert row.state == "verified"
    assert row.settle_tx is None
    assert change(before, balances(world, MONEY_PATH)) == NOTHING_MOVED
    assert world.upstream_stats()["paid_submits"] == submits

    resume_mining(world)
    if client_retries:
        served = await retry_until_served(world, payment, first)
        assert served.json()["jobId"] == row.id
    else:
        # No client ever comes back: the background worker resolves the job alone.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while (await jobs_of(module_db, payer, nonce))[0].state != "completed":
            assert loop.time() < deadline, "the worker did not resolve the unknown settlement"
            await asyncio.sleep(0.5)
    await assert_served_once(world, module_db, payment, row.id, before)
    assert world.upstream_stats()["paid_submits"] == submits + 1
