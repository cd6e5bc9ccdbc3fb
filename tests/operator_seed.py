"""Rows for operator-tool tests written straight to a database: jobs in chosen states with
their ledger rows, API keys and key-paid jobs with their key-ledger rows.

The key payment path is built elsewhere; until it is here, key-paid jobs and their budget
movements are written by `key_paid_job` as that path will write them (a debit per job, a
credit when one is given back).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import insert

from app.core.db import Executor
from app.jobs.models import Job, JobState
from app.jobs.repository import JobRepository
from app.keys.models import ApiKey, KeyLedgerEntry

OPERATOR = "0x" + "0a" * 20
HOT_WALLET = "0x" + "0b" * 20
UPSTREAM = "0x" + "0c" * 20
ASSET = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def tx() -> str:
    """A made-up transaction hash."""
    return "0x" + secrets.token_hex(32)


async def job(
    conn: Executor,
    state: JobState,
    *,
    payer: str,
    amount: int = 63240,
    charged: bool = True,
    upstream: int | None = None,
    refund: bool = False,
    api_key_id: str | None = None,
    **columns: Any,
) -> Job:
    """A job in `state` with a charge row (when `charged`), an upstream row (`upstream`
    atomic units) and a refund row (`refund`), each with its own transaction hash."""
    row = Job(
        id="job_" + secrets.token_hex(16),
        state=state.value,
        route="/v1/images/edit",
        request_body={"prompt": "p"},
        fingerprint="f" * 64,
        x402_version=2,
        payer=payer,
        pay_network="base",
        pay_asset=ASSET,
        pay_amount=amount,
        pay_to=OPERATOR,
        pay_nonce="0x" + secrets.token_hex(32),
        pay_valid_before=2**40,
        payment_payload={},
        payment_requirements={},
        settle_attempts=1,
        upstream_attempts=0,
        api_key_id=api_key_id,
        settle_tx=tx() if charged else None,
        upstream_amount=upstream,
        upstream_pay_to=UPSTREAM if upstream else None,
        upstream_tx=tx() if upstream else None,
        refund_amount=amount if refund else None,
        refund_tx=tx() if refund else None,
        **columns,
    )
    repo = JobRepository(conn)
    await repo.add(row)
    if row.settle_tx:
        await repo.record_charge(row, row.settle_tx)
    if row.upstream_tx:
        await repo.record_upstream(row, HOT_WALLET, row.upstream_tx)
    if row.refund_tx:
        await repo.record_refund(row, HOT_WALLET, row.refund_tx)
    return row


async def api_key(conn: Executor, name: str, *, budget: int | None, spent: int = 0) -> str:
    """An API key row (its secret is never needed here); its id."""
    key_id = "key_" + secrets.token_hex(8)
    await conn.execute(
        insert(ApiKey).values(
            id=key_id,
            name=name,
            prefix="x4r_" + secrets.token_hex(3),
            secret_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
            budget_atomic=budget,
            spent_atomic=spent,
        )
    )
    return key_id


async def key_paid_job(
    conn: Executor,
    key_id: str,
    state: JobState,
    *,
    payer: str,
    amount: int,
    upstream: int | None = None,
    credited: bool = False,
) -> Job:
    """A job paid from a key's budget: no on-chain charge, a key-ledger debit (and a credit
    when the job's amount was given back to the key); `upstream` as in `job`."""
    row = await job(
        conn,
        state,
        payer=payer,
        amount=amount,
        charged=False,
        upstream=upstream,
        api_key_id=key_id,
    )
    await conn.execute(
        insert(KeyLedgerEntry).values(key_id=key_id, job_id=row.id, kind="debit", amount=amount)
    )
    if credited:
        await conn.execute(
            insert(KeyLedgerEntry).values(
                key_id=key_id, job_id=row.id, kind="credit", amount=amount, reason="job failed"
            )
        )
    return row
