"""X402R_SETTLEMENT_ORDER=settle_after: the client is charged only once the upstream accepted.

The happy path charges once; an upstream that refuses leaves the client uncharged; and the
documented risk (the client's funds are gone by the time we settle) costs the operator the
upstream price, is parked as `needs_attention` and is never served to the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from x402.http import decode_payment_response_header

from app.jobs.models import Job, LedgerEntry
from sandbox.chain import (
    USDC_ADDRESS,
    authorization_state,
    dev_account,
    send_transaction,
    usdc_balance,
)
from sandbox.world import (
    HOT_WALLET,
    OPERATOR,
    PAYER,
    PAYER_2,
    UPSTREAM_PAYEE,
    World,
    address,
    key_hex,
)
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    moved,
    payer_and_nonce,
    poll_until_done,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free

ELSEWHERE = 6  # a dev account no party of the world uses
WHO = (PAYER, PAYER_2, OPERATOR, HOT_WALLET, UPSTREAM_PAYEE, ELSEWHERE)
FINAL = ("completed", "failed", "payment_failed", "refunded", "needs_attention")


@pytest.fixture(scope="module")
def after_world(make_module_world: WorldMaker, module_db: str) -> World:
    """A gateway that settles the client's payment only after the upstream accepted."""
    return make_module_world(
        job_delay_s=0.5,
        database_url=module_db,
        X402R_SETTLEMENT_ORDER="settle_after",
        X402R_UPSTREAM_TIMEOUT_S="10",
        X402R_FACILITATOR_TIMEOUT_S="10",
    )


@pytest.fixture
def world(after_world: World) -> Iterator[World]:
    """The settle-after world with no upstream faults before and after each test."""
    yield from fault_free(after_world)


def transfer_all(world: World, source: int, target: int) -> int:
    """Move every USDC unit of `source` to `target` with a plain ERC-20 transfer."""
    amount = usdc_balance(world.rpc_url, address(source))
    data = keccak(text="transfer(address,uint256)")[:4] + encode(
        ["address", "uint256"], [address(target), amount]
    )
    send_transaction(world.rpc_url, dev_account(source), USDC_ADDRESS, data)
    return amount


async def post(world: World, payment: dict[str, str]) -> httpx.Response:
    """Send the edit with a signed payment."""
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            world.gateway_url() + "/v1/images/edit", json=EDIT_BODY, headers=payment
        )


async def row_of(module_db: str, payment: dict[str, str]) -> Any:
    """The one job row this payment bought."""
    payer, nonce = payer_and_nonce(payment)
    engine = create_async_engine(module_db)
    try:
        async with engine.connect() as conn:
            stmt = select(Job).where(Job.payer == payer, Job.pay_nonce == nonce)
            [row] = (await conn.execute(stmt)).all()
            return row
    finally:
        await engine.dispose()


async def final_row(module_db: str, payment: dict[str, str], timeout: float = 40) -> Any:
    """The payment's job row once it reached a final state."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (row := await row_of(module_db, payment)).state not in FINAL:
        assert loop.time() < deadline, (row.state, row.error_code)
        await asyncio.sleep(0.3)
    return row


async def ledger_of(module_db: str, job_id: str) -> list[tuple[str, int]]:
    """(kind, amount) of a job's ledger rows, sorted."""
    engine = create_async_engine(module_db)
    try:
        async with engine.connect() as conn:
            stmt = select(LedgerEntry.kind, LedgerEntry.amount).where(LedgerEntry.job_id == job_id)
            return sorted((r.kind, r.amount) for r in (await conn.execute(stmt)).all())
    finally:
        await engine.dispose()


async def test_settles_after_the_upstream_accepted_and_charges_once(
    world: World, module_db: str
) -> None:
    payment = await sign_payment(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    before = balances(world, WHO)

    answer = await post(world, payment)

    assert answer.status_code == 200, answer.text
    settled = decode_payment_response_header(answer.headers["PAYMENT-RESPONSE"])
    assert settled.success
    assert settled.transaction
    job = await poll_until_done(answer.json()["statusUrl"], timeout=40)
    assert job["status"] == "completed", job
    assert job["payment"]["transaction"] == settled.transaction
    assert moved(world, before) == {
        PAYER: -PRICE,
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    assert await ledger_of(module_db, job["jobId"]) == [
        ("charge", PRICE),
        ("upstream", UPSTREAM_PRICE),
    ]
    assert world.upstream_stats()["paid_submits"] == 1
    again = await post(world, payment)
    assert again.status_code == 200, again.text
    assert again.json()["jobId"] == job["jobId"]
    assert moved(world, before)[PAYER] == -PRICE
    await audit(module_db, world.rpc_url)


async def test_upstream_refusing_our_payment_leaves_the_client_uncharged(
    world: World, module_db: str
) -> None:
    payment = await sign_payment(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    world.set_faults({"payment_loop": True})
    before = balances(world, WHO)

    answer = await post(world, payment)

    assert answer.status_code == 502, answer.text
    assert answer.json()["error"] == "upstream_payment_refused"
    assert "PAYMENT-RESPONSE" not in answer.headers
    row = await final_row(module_db, payment)
    assert row.state == "failed"
    assert row.settle_tx is None
    assert row.refund_amount is None
    assert moved(world, before) == {}
    assert not authorization_state(world.rpc_url, *payer_and_nonce(payment))
    assert await ledger_of(module_db, row.id) == []
    await audit(module_db, world.rpc_url)


async def test_upstream_that_keeps_failing_before_charging_us_never_charges_the_client(
    world: World, module_db: str
) -> None:
    payment = await sign_payment(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    world.set_faults({"submit_5xx_before_settle": True})
    before = balances(world, WHO)

    answer = await post(world, payment)

    # The gateway retries the same authorization in the background, so the first answer may
    # still be "processing"; it is never a charge.
    assert answer.status_code in (200, 502, 503), answer.text
    assert "PAYMENT-RESPONSE" not in answer.headers
    row = await final_row(module_db, payment)
    assert row.state == "failed", (row.state, row.error_code)
    assert row.settle_tx is None
    assert row.upstream_attempts == 3
    assert moved(world, before) == {}
    assert not authorization_state(world.rpc_url, *payer_and_nonce(payment))
    assert world.upstream_stats()["paid_submits"] == 0
    assert await ledger_of(module_db, row.id) == []
    await audit(module_db, world.rpc_url)


async def test_client_funds_gone_before_settlement_cost_the_operator_and_are_parked(
    world: World, module_db: str
) -> None:
    """The documented risk, provoked: the payer empties its wallet while we buy upstream."""
    payment = await sign_payment(world.gateway_url() + "/v1/images/edit", key_hex(PAYER_2))
    # The upstream takes our payment, then needs 2 s to answer: the window we settle after.
    world.set_faults({"submit_timeout": {"times": 1, "value": 2}})
    before = balances(world, WHO)
    moved_away = 0
    try:
        pending = asyncio.create_task(post(world, payment))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while world.upstream_stats()["paid_submits"] == 0:
            assert not pending.done(), pending.result().text
            assert loop.time() < deadline, "the upstream was never paid"
            await asyncio.sleep(0.05)
        moved_away = transfer_all(world, PAYER_2, ELSEWHERE)
        answer = await pending
        row = await final_row(module_db, payment)
        replay = await post(world, payment)
        replay_row = await row_of(module_db, payment)
    finally:
        if moved_away:
            transfer_all(world, ELSEWHERE, PAYER_2)

    # The client is told its payment failed, is not charged, and gets no result for free.
    assert answer.status_code == 402, answer.text
    assert "PAYMENT-RESPONSE" not in answer.headers
    assert row.state == "needs_attention", (row.state, row.error_code)
    assert row.settle_tx is None
    assert replay.status_code != 200, replay.text
    assert replay_row.id == row.id
    await asyncio.sleep(1)  # longer than the upstream job takes
    async with httpx.AsyncClient(timeout=30) as http:
        view = (await http.get(f"{world.gateway_url()}/v1/jobs/{row.id}")).json()
    assert view["state"] == "needs_attention", view
    assert "images" not in view
    assert not authorization_state(world.rpc_url, *payer_and_nonce(payment))
    # The operator paid the upstream and was not paid: visible on chain and in the ledger
    # (the payer's funds are back where they were, untouched by the gateway).
    assert moved(world, before) == {HOT_WALLET: -UPSTREAM_PRICE, UPSTREAM_PAYEE: UPSTREAM_PRICE}
    assert await ledger_of(module_db, row.id) == [("upstream", UPSTREAM_PRICE)]
    sums = await audit(module_db, world.rpc_url, [row.id])
    assert sums["margin"] == -UPSTREAM_PRICE
    await audit(module_db, world.rpc_url)
