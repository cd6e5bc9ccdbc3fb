"""Small helpers the end-to-end tests share: paying clients, DB reads, ledger checks."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from eth_account import Account
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine
from web3 import Web3
from x402.http import (
    decode_payment_required_header,
    decode_payment_signature_header,
    encode_payment_signature_header,
)
from x402.http.clients import wrapHttpxWithPayment
from x402.schemas import PaymentRequiredV1

from app.jobs.models import Job, LedgerEntry
from sandbox.chain import mint, usdc_balance
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, PAYER_2, UPSTREAM_PAYEE, World, address

PRICE = 63240  # the listing's 52700 + the default 20 % markup, rounded up
UPSTREAM_PRICE = 52700  # the simulated upstream's price, as in the listing

PARTIES = (PAYER, PAYER_2, OPERATOR, HOT_WALLET, UPSTREAM_PAYEE)
MONEY_PATH = (PAYER, OPERATOR, HOT_WALLET, UPSTREAM_PAYEE)  # the parties of one payer's job
OPERATOR_SIDE = (OPERATOR, HOT_WALLET, UPSTREAM_PAYEE)
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"  # at least 32 characters

# Balance changes over MONEY_PATH per outcome of one paid job.
NOTHING_MOVED = dict.fromkeys(MONEY_PATH, 0)
SERVED = {
    PAYER: -PRICE,
    OPERATOR: PRICE,
    HOT_WALLET: -UPSTREAM_PRICE,
    UPSTREAM_PAYEE: UPSTREAM_PRICE,
}
REFUNDED_UPSTREAM_CHARGED = {
    PAYER: 0,
    OPERATOR: PRICE,
    HOT_WALLET: -UPSTREAM_PRICE - PRICE,
    UPSTREAM_PAYEE: UPSTREAM_PRICE,
}
REFUNDED_UPSTREAM_NOT_CHARGED = {PAYER: 0, OPERATOR: PRICE, HOT_WALLET: -PRICE, UPSTREAM_PAYEE: 0}

__all__ = [
    "ADMIN_TOKEN",
    "EDIT_BODY",
    "MONEY_PATH",
    "NOTHING_MOVED",
    "OPERATOR_SIDE",
    "PARTIES",
    "PRICE",
    "REFUNDED_UPSTREAM_CHARGED",
    "REFUNDED_UPSTREAM_NOT_CHARGED",
    "SERVED",
    "UPSTREAM_PRICE",
    "balances",
    "change",
    "db_rows",
    "funded_payer",
    "ledger_balances",
    "moved",
    "operator_side",
    "paid_post",
    "payer_and_nonce",
    "payment_nonce",
    "poll_until_done",
    "run_until_resolved",
    "sign_payment",
]


async def sign_payment(
    url: str, key: str, body: dict[str, Any] | None = None, *, v1_only: bool = False
) -> dict[str, str]:
    """Ask for the 402 and sign it with the SDK client; returns the payment header to send.

    v2 reads the `PAYMENT-REQUIRED` header (as the SDK's transport does); v1 reads the 402
    body and answers with `X-PAYMENT`, as a v1-only client does.
    """
    async with httpx.AsyncClient(timeout=60) as http:
        unpaid = await http.post(url, json=body or EDIT_BODY)
    assert unpaid.status_code == 402, unpaid.text
    client = payer_client(key, v1_only=v1_only)
    if v1_only:
        required_v1 = PaymentRequiredV1.model_validate(unpaid.json())
        payload = await client.create_payment_payload(required_v1)
        return {"X-PAYMENT": encode_payment_signature_header(payload)}
    required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    payload = await client.create_payment_payload(required)
    return {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}


async def paid_post(
    url: str, key: str, body: dict[str, Any] | None = None, *, v1_only: bool = False
) -> httpx.Response:
    """POST `body` to `url`, letting the official SDK client pay the 402.

    v2 goes through the SDK's own httpx transport, end to end as an agent would use it.
    """
    if not v1_only:
        async with wrapHttpxWithPayment(payer_client(key), timeout=60) as http:
            return await http.post(url, json=body or EDIT_BODY)
    headers = await sign_payment(url, key, body, v1_only=True)
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(url, json=body or EDIT_BODY, headers=headers)


async def poll_until_done(status_url: str, timeout: float = 60) -> dict[str, Any]:
    """Long-poll our status URL until the job leaves `processing`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=40) as http:
        while loop.time() < deadline:
            job: dict[str, Any] = (await http.get(status_url, params={"wait": 10})).json()
            if job["status"] != "processing":
                return job
    raise AssertionError(f"job at {status_url} still processing after {timeout}s")


async def db_rows(database_url: str, job_id: str) -> tuple[Job, list[LedgerEntry]]:
    """The job row and its ledger rows, read straight from the database."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            job = (await conn.execute(select(Job).where(Job.id == job_id))).one()
            ledger = (
                await conn.execute(
                    select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.id)
                )
            ).all()
    finally:
        await engine.dispose()
    return job, ledger  # type: ignore[return-value]


async def ledger_balances(database_url: str) -> dict[str, int]:
    """Ledger sums per kind, plus a check that every row carries a transaction hash."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(LedgerEntry))).all()
    finally:
        await engine.dispose()
    sums = {"charge": 0, "upstream": 0, "refund": 0}
    for row in rows:
        assert row.tx_hash.startswith("0x"), row
        assert len(row.tx_hash) == 66, row
        sums[row.kind] += row.amount
    sums["margin"] = sums["charge"] - sums["refund"] - sums["upstream"]
    return sums


def balances(world: World, parties: tuple[int, ...] = PARTIES) -> dict[int, int]:
    """USDC balance of each of `parties`, by account index."""
    return {i: usdc_balance(world.rpc_url, address(i)) for i in parties}


def operator_side(world: World) -> dict[int, int]:
    """USDC balances of the operator, its hot wallet and the upstream's payee."""
    return balances(world, OPERATOR_SIDE)


def change(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """Per-party balance change, for every party of `before` (zeros kept)."""
    return {i: after[i] - before[i] for i in before}


def moved(world: World, before: dict[int, int]) -> dict[int, int]:
    """Balance change of `before`'s parties since then; parties that did not move are left out."""
    return {i: d for i, d in change(before, balances(world, tuple(before))).items() if d}


def funded_payer(world: World, amount: int) -> tuple[str, str]:
    """A new account holding exactly `amount`: (key, address)."""
    account = Account.create()
    mint(world.rpc_url, account.address, amount)
    return "0x" + bytes(account.key).hex(), str(account.address)


def payment_nonce(headers: dict[str, str]) -> str:
    """The authorization nonce (lower case) of the one payment header in `headers`."""
    (value,) = headers.values()
    return str(json.loads(base64.b64decode(value))["payload"]["authorization"]["nonce"]).lower()


def payer_and_nonce(payment: dict[str, str]) -> tuple[str, str]:
    """(payer, nonce) of a signed payment header."""
    payload = decode_payment_signature_header(next(iter(payment.values())))
    auth = payload.payload["authorization"]
    return str(Web3.to_checksum_address(auth["from"])), str(auth["nonce"]).lower()


RETRYING = ("verified", "refunding")  # states a lost answer leaves a job in, waiting to retry


async def run_until_resolved(database_url: str, nonce: str, timeout: float = 90) -> Job:
    """Let time pass for the job bought by `nonce`: make each scheduled retry of an unknown
    outcome due at once, until the job stops retrying; the job as it ends."""
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
