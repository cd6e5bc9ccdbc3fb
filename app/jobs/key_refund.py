"""Refunding a key-paid job: its debit credited back to the key, in the write that ends it.

No transfer, no signature, no facilitator: the compare-and-set moving the job to `refunded`
and the key_ledger credit commit together, so the key is credited exactly once whoever (a
request, any replica's worker, a restarted process) fails the job.
"""

from __future__ import annotations

from typing import Any

from app.core.db import Executor
from app.jobs.models import Job, JobState
from app.jobs.repository import utcnow
from app.jobs.transitions import transition
from app.keys import budget

# The states a key-paid job is refunded from (in a fixed order: one statement shape).
REFUNDABLE = [
    s
    for s in JobState
    if s in {JobState.VERIFIED, JobState.PAID, JobState.UPSTREAM_SIGNED, JobState.SUBMITTED,
             JobState.REFUNDING}
]  # fmt: skip


async def refund_to_key(session: Executor, job: Job, common: dict[str, Any]) -> Job | None:
    """Move `job` to refunded and credit its key, in the caller's transaction; None (nothing
    credited) when the job left the refundable states meanwhile."""
    written = await transition(
        session,
        job.id,
        REFUNDABLE,
        event="refunded_to_key",
        state=JobState.REFUNDED.value,
        refund_amount=job.pay_amount,
        finished_at=utcnow(),
        next_check_at=None,
        **common,
    )
    if written is not None:
        await budget.credit(session, job.id, str(common.get("error_code") or "refund"))
    return written
