"""The seed's API keys: a few keys that pay for about 5 % of the jobs from their budgets.

A key-paid job is stored as the gateway stores one (`app.jobs.key_purchase.key_paid_job`):
no x402 payment (version 0, the key as payer, the job id as nonce, empty payloads), never
settled, so no charge in `ledger`; its budget is debited in `key_ledger` when it is created
and credited back there when it is refunded. The upstream payment is on-chain as for any job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

KEY_EVERY = 20  # one job in this many is paid with an API key (5 %)
KEYS = tuple(f"key_seed{n:02d}" for n in range(6))
KEY_LEDGER_COLUMNS = ["key_id", "job_id", "kind", "amount", "reason", "created_at"]
BUDGETED = KEYS[:2]  # keys with a total budget; the others have none


def key_of(i: int) -> str | None:
    """The key that pays for job `i`, or None (paid over x402). Early keys pay more often."""
    if i % KEY_EVERY != 3:
        return None
    turn = (i // KEY_EVERY) % 21  # 6 + 5 + 4 + 3 + 2 + 1: key n pays 6 - n turns in 21
    for n in range(len(KEYS)):
        turn -= len(KEYS) - n
        if turn < 0:
            return KEYS[n]
    return KEYS[-1]


def key_paid_columns(job_id: str, key_id: str) -> dict[str, Any]:
    """The job columns that differ for a key-paid job."""
    return {
        "x402_version": 0,
        "payer": key_id,
        "pay_nonce": job_id,
        "pay_valid_before": 0,
        "payment_payload": "{}",
        "payment_requirements": "{}",
        "api_key_id": key_id,
        "settle_tx": None,
        "settle_attempts": 0,
        "refund_tx": None,
        "refund_attempts": 0,
    }


def key_ledger_rows(
    key_id: str | None, job_id: str, amount: int, created: datetime, refunded_at: datetime | None
) -> list[tuple[Any, ...]]:
    """The job's debit and, when it was refunded, its credit (`KEY_LEDGER_COLUMNS` order);
    none for a job paid over x402 (no `key_id`)."""
    if key_id is None:
        return []
    rows: list[tuple[Any, ...]] = [(key_id, job_id, "debit", amount, None, created)]
    if refunded_at is not None:
        rows.append((key_id, job_id, "credit", amount, "upstream_failed", refunded_at))
    return rows


async def insert_keys(conn: Any, now: datetime) -> None:
    """The keys themselves, created a year ago (budgets are set once the debits are in)."""
    await conn.executemany(
        "INSERT INTO api_keys (id, name, prefix, secret_hash, budget_atomic, spent_atomic, "
        "charge_at, own_jobs_only, created_at) VALUES ($1, $2, $3, $4, $5, 0, 'sale', false, $6)",
        [
            (
                key,
                f"seed team {n}",
                f"x402r_seed{n:02d}",
                f"{n:064x}",
                1 if key in BUDGETED else None,
                now,
            )
            for n, key in enumerate(KEYS)
        ],
    )


_SPENT = """
UPDATE api_keys k
SET spent_atomic = s.spent,
    budget_atomic = CASE WHEN k.budget_atomic IS NULL THEN NULL ELSE s.spent + 50000000 END
FROM (SELECT key_id, sum(CASE kind WHEN 'debit' THEN amount ELSE -amount END) AS spent
      FROM key_ledger WHERE kind IN ('debit', 'credit') GROUP BY key_id) s
WHERE k.id = s.key_id
"""


async def settle_keys(conn: Any) -> None:
    """Each key's spend as its ledger says; the budgeted keys keep 50 USDC left."""
    await conn.execute(_SPENT)
