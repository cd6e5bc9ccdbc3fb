"""Recording a new job, with what it commits us to, in one transaction: its share of the
daily spend cap and (settling after the upstream) the payer's limit on unsettled jobs, or
(paid with an API key) the debit of the key's budget."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, bindparam, func, select, text

from app.context import Gateway
from app.core.db import Executor, core_transaction, dialect_name
from app.core.errors import Conflict, ServiceUnavailable
from app.core.modes import SettlementOrder
from app.jobs import reservation
from app.jobs.models import Job, JobState
from app.jobs.policy import after, request_lease_s
from app.jobs.repository import JobRepository, utcnow
from app.jobs.transitions import transition
from app.keys import budget

_JOBS = cast(Table, Job.__table__)
# Jobs whose payment is not settled yet and that may still buy (or have bought) upstream.
_IN_FLIGHT = [JobState.VERIFIED, JobState.PAID, JobState.UPSTREAM_SIGNED, JobState.SUBMITTED]
_UNSETTLED = (
    select(func.count())
    .select_from(_JOBS)
    .where(
        _JOBS.c.payer == bindparam("payer"),
        _JOBS.c.settle_tx.is_(None),
        _JOBS.c.state.in_([s.value for s in _IN_FLIGHT]),
    )
)
# Held until the transaction ends: every replica recording a job for this payer waits here,
# so each one counts the others' committed jobs and the limit cannot be overrun.
_LOCK_PAYER = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def cap_reached() -> ServiceUnavailable:
    """The answer when selling would exceed the daily upstream spend cap."""
    return ServiceUnavailable(
        "daily upstream spend cap reached; try again later", code="daily_spend_cap_reached"
    )


async def lock_payer(session: Executor, purpose: str, payer: str) -> None:
    """Serialize, across replicas, transactions that count this payer's jobs for `purpose`.

    SQLite (the single-process sandbox) serializes writers by itself.
    """
    if dialect_name(session) == "postgresql":
        await session.execute(_LOCK_PAYER, {"key": f"{purpose}:{payer.lower()}"})


async def _check_unsettled(session: Executor, payer: str, limit: int) -> None:
    await lock_payer(session, "unsettled", payer)
    if (await session.execute(_UNSETTLED, {"payer": payer})).scalar_one() >= limit:
        raise Conflict(
            "this payer already has a job whose payment is not settled yet; retry once it "
            "finished (nothing was charged, nothing was bought)",
            code="unsettled_payment_in_flight",
            headers={"Retry-After": "5"},
        )


async def record(gw: Gateway, job: Job, quote: int) -> None:
    """Insert `job`, reserving `quote` of the daily cap for it; nothing is written when the
    cap has no room (503) or the payer has too many unsettled jobs (409)."""
    s = gw.settings
    async with core_transaction(gw.engine) as session:
        if s.settlement_order is SettlementOrder.SETTLE_AFTER:
            await _check_unsettled(session, job.payer, s.settle_after_max_unsettled_per_payer)
        if not await reservation.reserve_for(session, job, quote, s.daily_upstream_cap_atomic):
            raise cap_reached()
        await JobRepository(session).add(job)


async def record_key_paid(gw: Gateway, job: Job, quote: int) -> Job:
    """Insert a key-paid `job` already PAID: the key's budget debited (`job.pay_amount`), the
    daily cap reserved, the job and its key_ledger debit written, all in one transaction.

    Nothing is written when the key's budget has no room (BudgetExhausted), the key was
    revoked meanwhile (InvalidApiKey) or the cap has no room (503).
    """
    assert job.api_key_id is not None
    now = utcnow()
    async with core_transaction(gw.engine) as session:
        await budget.debit(session, job.api_key_id, job.pay_amount, now)
        if not await reservation.reserve_for(
            session, job, quote, gw.settings.daily_upstream_cap_atomic
        ):
            raise cap_reached()
        await JobRepository(session).add(job)
        await budget.record_debit(session, job.api_key_id, job.id, job.pay_amount, now)
        paid = await transition(
            session,
            job.id,
            [JobState.VERIFIED],
            event="key_debited",
            state=JobState.PAID.value,
            next_check_at=after(request_lease_s(gw.settings)),
        )
    assert paid is not None  # inserted by this very transaction
    return paid
