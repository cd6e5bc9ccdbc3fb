"""Key money for reports and dashboards: the key-paid jobs, their credits, the ledger's sums.

Key money never appears in the on-chain `ledger` (charges, refunds): it is in `key_ledger`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select

from app.core.db import Executor
from app.jobs.models import Job, JobState
from app.keys.budget import KEYS, LEDGER
from app.keys.models import KeyLedgerKind

# Where-clauses on `jobs`: bought with an API key; and those credited back to their key
# (arc `refunded_to_key`: each has exactly one `key_ledger` credit row).
KEY_PAID: ColumnElement[bool] = Job.api_key_id.is_not(None)
KEY_REFUNDED: ColumnElement[bool] = KEY_PAID & (Job.state == JobState.REFUNDED.value)

_SUMS = select(LEDGER.c.kind, func.coalesce(func.sum(LEDGER.c.amount), 0).label("amount")).group_by(
    LEDGER.c.kind
)


async def key_ledger_totals(session: Executor) -> dict[str, int]:
    """Atomic USDC over every key: debits, credits, top-ups, and what the keys spent net."""
    sums = {kind.value: 0 for kind in KeyLedgerKind}
    for row in (await session.execute(_SUMS)).all():
        sums[str(row.kind)] = int(row.amount)
    return {
        "debits": sums["debit"],
        "credits": sums["credit"],
        "topups": sums["topup"],
        "spent": sums["debit"] - sums["credit"],
    }


async def keys_out_of_balance(session: Executor) -> list[dict[str, Any]]:
    """Keys whose `spent_atomic` is not their debits minus their credits (should be none)."""
    debits = (
        select(func.coalesce(func.sum(LEDGER.c.amount), 0))
        .where(LEDGER.c.key_id == KEYS.c.id, LEDGER.c.kind == KeyLedgerKind.DEBIT.value)
        .scalar_subquery()
    )
    credits = (
        select(func.coalesce(func.sum(LEDGER.c.amount), 0))
        .where(LEDGER.c.key_id == KEYS.c.id, LEDGER.c.kind == KeyLedgerKind.CREDIT.value)
        .scalar_subquery()
    )
    stmt = select(KEYS.c.id, KEYS.c.spent_atomic, (debits - credits).label("ledger")).where(
        KEYS.c.spent_atomic != debits - credits
    )
    return [
        {"keyId": row.id, "spent": int(row.spent_atomic), "ledger": int(row.ledger)}
        for row in (await session.execute(stmt)).all()
    ]
