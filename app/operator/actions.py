"""The operator's actions on a parked (`needs_attention`) job: retry it, or refund it.

Each action is one declared arc out of `needs_attention` and an `operator_actions` row with
its reason and actor, written in one transaction; the worker then does the money part.

Retryable, and why it is safe:
- `settlement_unresolved` (nothing bought upstream, settle_first): back to `verified` with one
  attempt counted, so the worker asks the chain for the first attempt's transfer before it
  sends the *same* stored authorization again. Its nonce lets it move money at most once.
- `refund_refused`, `refund_unresolved`: back to `refunding` with the *same* stored refund
  authorization (re-signed only once the chain shows the old one expired unused).

Everything else is refused: `fail_undecided` jobs may have paid the upstream (a resent
purchase could be refused as used, or run twice on a lenient upstream): refund them instead;
`refund_not_made` jobs need a fresh authorization: refund them; jobs parked after the upstream
was bought under `settle_after` have no charge to settle again or to refund.

Refundable: an on-chain charge (`settle_tx`) with no refund made, and none pending that could
still pay (no stored refund authorization, unless the chain showed it used by another
transfer: `refund_not_made`). A parked key-paid job has no transfer to make: its debit is
credited back to its key in the write that moves it to `refunded` (once: the key ledger's
unique (job, credit) row).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict, NotFound
from app.core.modes import SettlementOrder
from app.jobs.models import Job, JobState, OperatorAction
from app.jobs.repository import utcnow
from app.jobs.transitions import transition
from app.keys import budget

RETRY_SETTLEMENT = frozenset({"settlement_unresolved"})
RETRY_REFUND = frozenset({"refund_refused", "refund_unresolved"})
NOT_PARKED = "job_not_parked"
NOT_RETRYABLE = "job_not_retryable"
NOT_REFUNDABLE = "job_not_refundable"
MAX_REASON = 2000


class ActionRefused(Conflict):
    """The job is not in a state where this action is safe; nothing was changed."""

    def __init__(self, code: str, message: str, job: Job) -> None:
        details = {"jobId": job.id, "state": job.state, "errorCode": job.error_code}
        super().__init__(message, code=code, details=details)


def retry_refusal(job: Job, order: SettlementOrder) -> str | None:
    """Why a retry is refused for this job, or None when it is allowed."""
    if job.state != JobState.NEEDS_ATTENTION.value:
        return f"only needs_attention jobs are retried (this one is {job.state})"
    code = job.error_code or ""
    if code in RETRY_SETTLEMENT:
        if job.upstream_payment_header is not None or job.settle_tx is not None:
            return "the settlement is recorded or the upstream bought: nothing to settle again"
        if order is SettlementOrder.SETTLE_AFTER:
            return "settle_after: a resumed unsettled job would be abandoned, not settled"
        return None
    if code in RETRY_REFUND:
        if job.refund_amount is None or job.refund_payload is None or job.refund_tx is not None:
            return "no stored refund authorization to send again"
        return None
    return f"{code or 'this parking'} is not retryable: see `refund`, or resolve it by hand"


def refund_refusal(job: Job) -> str | None:
    """Why a refund is refused for this job, or None when it is allowed."""
    if job.state != JobState.NEEDS_ATTENTION.value:
        return f"only needs_attention jobs are refunded here (this one is {job.state})"
    if job.api_key_id is not None:
        return "already credited back to its key" if job.refund_amount is not None else None
    if job.settle_tx is None:
        return "no recorded charge to refund (retry an unresolved settlement first)"
    if job.refund_tx is not None:
        return "already refunded"
    if job.refund_payload is not None and job.error_code != "refund_not_made":
        return "a refund authorization is stored and may still pay: retry it instead"
    return None


async def _load(session: AsyncSession, job_id: str) -> Job:
    """The job, its row locked until the action is written (Postgres; SQLite writes serially)."""
    job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise NotFound(f"no job {job_id}", code="job_not_found")
    return job


async def _record(session: AsyncSession, job_id: str, action: str, reason: str, actor: str) -> None:
    await session.execute(
        insert(OperatorAction).values(
            job_id=job_id, action=action, reason=reason[:MAX_REASON], actor=actor[:100]
        )
    )


def _parked_elsewhere(job: Job) -> ActionRefused:
    return ActionRefused(NOT_PARKED, "the job left needs_attention meanwhile", job)


async def retry(
    session: AsyncSession, job_id: str, *, reason: str, actor: str, order: SettlementOrder
) -> Job:
    """Put a parked job back where the worker resumes it (see the module docstring)."""
    job = await _load(session, job_id)
    if why := retry_refusal(job, order):
        code = NOT_PARKED if job.state != JobState.NEEDS_ATTENTION.value else NOT_RETRYABLE
        raise ActionRefused(code, why, job)
    cleared: dict[str, Any] = {"error_code": None, "error_message": None, "finished_at": None}
    parked = [JobState.NEEDS_ATTENTION]
    if job.error_code in RETRY_SETTLEMENT:
        written = await transition(
            session,
            job_id,
            parked,
            event="operator_retry_settlement",
            state=JobState.VERIFIED.value,
            settle_attempts=1,  # counted: the chain is asked before anything is sent again
            next_check_at=utcnow(),
            **cleared,
        )
    else:
        written = await transition(
            session,
            job_id,
            parked,
            event="operator_retry_refund",
            state=JobState.REFUNDING.value,
            refund_attempts=0,
            next_check_at=utcnow(),
            **cleared,
        )
    if written is None:
        raise _parked_elsewhere(job)
    await _record(session, job_id, "retry", reason, actor)
    return written


async def refund(session: AsyncSession, job_id: str, *, reason: str, actor: str) -> Job:
    """Move a parked, charged job into the refund machinery for its full charge."""
    job = await _load(session, job_id)
    if why := refund_refusal(job):
        code = NOT_PARKED if job.state != JobState.NEEDS_ATTENTION.value else NOT_REFUNDABLE
        raise ActionRefused(code, why, job)
    if job.api_key_id is not None:
        return await _refund_to_key(session, job, reason=reason, actor=actor)
    written = await transition(
        session,
        job_id,
        [JobState.NEEDS_ATTENTION],
        event="operator_refund",
        still_null=("refund_tx",),
        state=JobState.REFUNDING.value,
        refund_amount=job.pay_amount,
        refund_payload=None,
        refund_nonce=None,
        refund_attempts=0,
        error_code=None,
        error_message=None,
        finished_at=None,
        next_check_at=utcnow(),
    )
    if written is None:
        raise _parked_elsewhere(job)
    await _record(session, job_id, "refund", reason, actor)
    return written


async def _refund_to_key(session: AsyncSession, job: Job, *, reason: str, actor: str) -> Job:
    """Credit a parked key-paid job's debit back to its key, in the write that ends it."""
    written = await transition(
        session,
        job.id,
        [JobState.NEEDS_ATTENTION],
        event="operator_refund_to_key",
        state=JobState.REFUNDED.value,
        refund_amount=job.pay_amount,
        finished_at=utcnow(),
        next_check_at=None,
    )
    if written is None:
        raise _parked_elsewhere(job)
    await budget.credit(session, job.id, f"operator refund: {reason}")
    await _record(session, job.id, "refund", reason, actor)
    return written
