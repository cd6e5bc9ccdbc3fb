"""A payer who spends its own nonce first has not paid: proof is the transfer, not the nonce.

The payer signs our payment, then front-runs the gateway's settlement with its own
`transferWithAuthorization` that uses the same nonce for a different transfer (a few atomic
units to itself), with a higher tip, in the same block. The gateway's settlement then reverts
("authorization is used"), and the chain shows the nonce used, but nobody paid the operator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_account.messages import encode_typed_data
from web3 import Web3
from x402.http import decode_payment_signature_header

from sandbox.chain import BLOCK_TIME_SECONDS, CHAIN_ID, USDC_ADDRESS, load_artifact, rpc_call
from sandbox.facilitator_server import FAKE_TX
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, address, key_hex
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    db_rows,
    moved,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free, pause_mining

TRANSFER_TYPES = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}
GWEI = 10**9


@pytest.fixture(scope="module")
def frontrun_world(make_module_world: WorldMaker, module_db: str) -> World:
    """A gateway with an embedded facilitator that waits long enough for a manual block."""
    return make_module_world(
        job_delay_s=0.5,
        database_url=module_db,
        X402R_FACILITATOR_TIMEOUT_S="20",
        X402R_UPSTREAM_TIMEOUT_S="5",
    )


@pytest.fixture
def world(frontrun_world: World) -> Iterator[World]:
    """The world with a clean upstream and normal mining after each test, whatever happens."""
    yield from fault_free(frontrun_world, mining=True)


def pending_count(rpc_url: str) -> int:
    """Transactions waiting in the node's pool."""
    status = rpc_call(rpc_url, "txpool_status", [])
    return int(str(status["pending"]), 16)


def send_self_transfer(rpc_url: str, authorization: dict[str, Any], value: int) -> str:
    """The payer spends our payment's nonce on a transfer to itself, with a high tip."""
    payer = Web3().eth.account.from_key(key_hex(PAYER))
    message = {
        "from": payer.address,
        "to": payer.address,
        "value": value,
        "validAfter": int(authorization["validAfter"]),
        "validBefore": int(authorization["validBefore"]),
        "nonce": bytes.fromhex(str(authorization["nonce"]).removeprefix("0x")),
    }
    domain = {
        "name": "USD Coin",
        "version": "2",
        "chainId": CHAIN_ID,
        "verifyingContract": USDC_ADDRESS,
    }
    signature = payer.sign_message(encode_typed_data(domain, TRANSFER_TYPES, message)).signature
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    token = w3.eth.contract(address=USDC_ADDRESS, abi=load_artifact("TestUSDC")["abi"])
    fn = token.get_function_by_signature(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )
    tx = fn(*message.values(), signature).build_transaction(
        {
            "from": payer.address,
            "chainId": CHAIN_ID,
            "gas": 200_000,
            "nonce": w3.eth.get_transaction_count(payer.address, "pending"),
            "maxPriorityFeePerGas": 50 * GWEI,
            "maxFeePerGas": 100 * GWEI,
        }
    )
    signed = payer.sign_transaction(tx)
    return "0x" + w3.eth.send_raw_transaction(signed.raw_transaction).hex().removeprefix("0x")


async def frontrun_paid_request(world: World) -> tuple[httpx.Response, str]:
    """Run the attack; returns the gateway's answer and the payer's own transaction."""
    url = world.gateway_url() + "/v1/images/edit"
    payment = await sign_payment(url, key_hex(PAYER))
    authorization = decode_payment_signature_header(payment["PAYMENT-SIGNATURE"]).payload[
        "authorization"
    ]
    pause_mining(world)
    assert pending_count(world.rpc_url) == 0
    own_tx = send_self_transfer(world.rpc_url, authorization, 1)
    async with httpx.AsyncClient(timeout=60) as http:
        request = asyncio.create_task(http.post(url, json=EDIT_BODY, headers=payment))
        deadline = time.monotonic() + 15
        while pending_count(world.rpc_url) < 2:  # the gateway's settlement is in the pool
            assert not request.done(), request.result().text
            assert time.monotonic() < deadline, "the gateway never broadcast its settlement"
            await asyncio.sleep(0.05)
        rpc_call(world.rpc_url, "evm_mine", [])
        rpc_call(world.rpc_url, "evm_setAutomine", [True])
        rpc_call(world.rpc_url, "evm_setIntervalMining", [BLOCK_TIME_SECONDS])
        response = await request
    receipt = rpc_call(world.rpc_url, "eth_getTransactionReceipt", [own_tx])
    assert int(str(receipt["status"]), 16) == 1  # the payer's own use of the nonce landed
    return response, own_tx


@pytest.mark.parametrize("upstream_fails", [False, True], ids=["served", "upstream_fails"])
async def test_nonce_spent_by_the_payer_elsewhere_is_not_a_payment(
    world: World, upstream_fails: bool
) -> None:
    """No job, no upstream purchase, no refund, no ledger row: nobody paid the operator."""
    if upstream_fails:
        world.set_faults({"job_fails": True})
    before = balances(world)
    response, own_tx = await frontrun_paid_request(world)

    assert response.status_code == 402, response.text
    assert "PAYMENT-RESPONSE" not in response.headers
    # Whatever the gateway does later (workers, refunds), no money moves.
    await asyncio.sleep(3 if upstream_fails else 1)
    assert moved(world, before) == {}
    assert world.upstream_stats()["paid_submits"] == 0, world.upstream_stats()

    job, ledger = await _job_rows(world, address(PAYER))
    assert job.state == "payment_failed", (job.state, job.error_code, job.error_message)
    assert job.error_code == "payment_not_received"
    assert own_tx.lower() in (job.error_message or "").lower()
    assert job.settle_tx is None
    assert job.refund_tx is None
    assert job.refund_payload is None
    assert job.upstream_payment_header is None
    assert ledger == []
    assert {OPERATOR, HOT_WALLET, UPSTREAM_PAYEE}.isdisjoint(moved(world, before))


async def _job_rows(world: World, payer: str) -> tuple[Any, list[Any]]:
    """The newest job of `payer` and its ledger rows."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.jobs.models import Job

    engine = create_async_engine(world.database_url)
    try:
        async with engine.connect() as conn:
            stmt = select(Job.id).where(Job.payer == payer).order_by(Job.created_at.desc())
            job_id = str((await conn.execute(stmt)).scalars().first())
    finally:
        await engine.dispose()
    return await db_rows(world.database_url, job_id)


@pytest.fixture(scope="module")
def lying_world(make_module_world: WorldMaker) -> World:
    """A gateway that uses the standalone (remote) facilitator, whose answers can lie."""
    return make_module_world(
        remote_facilitator=True,
        job_delay_s=0.5,
        X402R_FACILITATOR_TIMEOUT_S="10",
        # `full`: the failed job is refunded, so the refund's proof can be tested.
        X402R_REFUND_POLICY="full",
    )


@pytest.fixture
def remote(lying_world: World) -> Iterator[World]:
    """The remote-facilitator world, honest again after each test."""
    yield from fault_free(lying_world, upstream=False, facilitator=True)


@pytest.mark.parametrize("claimed", ["made_up", "earlier_payment"])
async def test_facilitator_success_with_a_made_up_transaction_is_not_a_charge(
    remote: World, claimed: str
) -> None:
    """The facilitator says "settled" but nothing moved: no charge, no job served; the same
    payment, retried once the facilitator is honest, is charged once for real.

    `earlier_payment`: the claimed transaction is real and does move exactly the price from
    this payer to our pay-to, but for the payer's previous payment (another nonce): it proves
    nothing about this one."""
    url = remote.gateway_url() + "/v1/images/edit"
    fault: dict[str, Any] = {"times": 1}
    if claimed == "earlier_payment":
        earlier = await sign_payment(url, key_hex(PAYER))
        async with httpx.AsyncClient(timeout=60) as http:
            first = await http.post(url, json=EDIT_BODY, headers=earlier)
        assert first.status_code == 200, first.text
        earlier_job, _ = await _job_rows(remote, address(PAYER))
        fault["value"] = earlier_job.settle_tx
    payment = await sign_payment(url, key_hex(PAYER))
    before = balances(remote)
    remote.set_facilitator_faults({"settle_fake_success": fault})
    async with httpx.AsyncClient(timeout=60) as http:
        lied = await http.post(url, json=EDIT_BODY, headers=payment)
        assert lied.status_code == 503, lied.text
        assert lied.json()["error"] == "payment_outcome_unknown"
        assert moved(remote, before) == {}
        job, ledger = await _job_rows(remote, address(PAYER))
        assert job.settle_tx is None
        assert ledger == []
        served = lied
        for _ in range(8):  # as a client does: the same payment, after each Retry-After
            await asyncio.sleep(float(served.headers["Retry-After"]))
            served = await http.post(url, json=EDIT_BODY, headers=payment)
            if served.status_code != 503:
                break
    assert served.status_code == 200, served.text
    job, ledger = await _job_rows(remote, address(PAYER))
    assert job.settle_tx not in (FAKE_TX, fault.get("value"))
    assert [(row.kind, row.amount, row.tx_hash) for row in ledger][:1] == [
        ("charge", PRICE, job.settle_tx)
    ]
    await audit(remote.database_url, remote.rpc_url, [job.id])  # every row is a real transfer


async def test_facilitator_naming_another_transaction_is_checked_on_chain(remote: World) -> None:
    """The facilitator settles but names a transaction that is not ours: the gateway records
    the transfer the chain shows, never the claimed one."""
    remote.set_facilitator_faults({"settle_wrong_tx": {"times": 1}})
    url = remote.gateway_url() + "/v1/images/edit"
    payment = await sign_payment(url, key_hex(PAYER))
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(url, json=EDIT_BODY, headers=payment)
    assert response.status_code == 200, response.text
    job, ledger = await _job_rows(remote, address(PAYER))
    assert job.settle_tx is not None
    assert job.settle_tx != FAKE_TX
    assert ledger[0].kind == "charge"
    assert ledger[0].tx_hash == job.settle_tx
    await audit(remote.database_url, remote.rpc_url, [job.id])


async def test_refund_claimed_by_the_facilitator_counts_only_once_on_chain(remote: World) -> None:
    """The upstream fails the job; the facilitator claims the refund settled but moved
    nothing: the job stays refunding with no refund recorded, until the same authorization
    really pays the client back."""
    url = remote.gateway_url() + "/v1/images/edit"
    remote.set_faults({"job_fails": True})
    try:
        payment = await sign_payment(url, key_hex(PAYER))
        before = balances(remote)
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(url, json=EDIT_BODY, headers=payment)
            assert response.status_code == 200, response.text
            # Client and upstream are settled; the next settlement is the refund's.
            remote.set_facilitator_faults({"settle_fake_success": {"times": 1}})
            job_url = f"{remote.gateway_url()}/v1/jobs/{response.json()['jobId']}"
            for _ in range(20):
                job = (await http.get(job_url, params={"wait": 1})).json()
                if job["state"] != "submitted":
                    break
            assert job["state"] == "refunding", job
            row, ledger = await _job_rows(remote, address(PAYER))
            assert row.refund_tx is None
            assert [entry.kind for entry in ledger] == ["charge", "upstream"]
            assert moved(remote, before) == {
                PAYER: -PRICE,
                OPERATOR: PRICE,
                HOT_WALLET: -UPSTREAM_PRICE,
                UPSTREAM_PAYEE: UPSTREAM_PRICE,
            }
            for _ in range(60):  # the refund is retried after 30 s
                job = (await http.get(job_url, params={"wait": 5})).json()
                if job["state"] != "refunding":
                    break
    finally:
        remote.reset_upstream()
    assert job["state"] == "refunded", job
    row, ledger = await _job_rows(remote, address(PAYER))
    assert row.refund_tx not in (None, FAKE_TX)
    assert [(entry.kind, entry.tx_hash) for entry in ledger][2:] == [("refund", row.refund_tx)]
    assert moved(remote, before) == {  # the payer got its money back, once
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE - PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    await audit(remote.database_url, remote.rpc_url, [row.id])
