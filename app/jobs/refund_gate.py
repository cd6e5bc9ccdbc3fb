"""Before a policy refund is signed (or credited to a key): may it go out yet?

A refund that depends on the upstream not having charged us (`if_upstream_not_charged`, and
under `full` whether it counts against the payer's limit) is decided only once our upstream
authorization can no longer be executed. Until then the job waits in `refunding`
(`refund_postponed`); once it expired unused the refund goes on; if it was executed after
all, the spend is recorded and the refund withdrawn (`if_upstream_not_charged`) or counted
against the payer's limit (`full`). Without a chain (X402R_ALLOW_NO_RPC) nothing can be
known: the refund goes on as decided when the job failed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.context import Gateway
from app.core.db import Executor, core_transaction
from app.core.modes import RefundPolicy
from app.jobs import refund_limit
from app.jobs.models import Job, JobState
from app.jobs.policy import after
from app.jobs.repository import JobRepository, load_job, utcnow
from app.jobs.transitions import transition
from app.jobs.upstream_charge import Charge, UpstreamCharge, upstream_charge

CHARGED_LATE = "upstream_charged_late"
CONDITIONAL = (RefundPolicy.IF_UPSTREAM_NOT_CHARGED, RefundPolicy.FULL)
# The least pause before asking again (the chain's clock may lag the database's).
MIN_PAUSE_S = 5
UNREADABLE_PAUSE_S = 30
REFUNDING = [JobState.REFUNDING]


def refund_after(charge: UpstreamCharge) -> datetime:
    """When a refund waiting on a live authorization is looked at again."""
    assert charge.decidable_at is not None
    return max(datetime.fromtimestamp(charge.decidable_at, UTC), after(MIN_PAUSE_S))


def conditional(gw: Gateway, job: Job) -> bool:
    """Whether this refund still depends on our upstream charge being known.

    The operator's refunds are the operator's decision and are not second-guessed; a refund
    already signed was decided before it was signed (`Job.refund_awaits_upstream_charge`).
    """
    return (
        gw.chain is not None
        and gw.settings.refund_policy in CONDITIONAL
        and job.refund_awaits_upstream_charge
    )


async def refund_may_go(gw: Gateway, job: Job) -> Job | None:
    """None when the refund of this REFUNDING job may be signed or credited now; otherwise
    the job as written: postponed, withdrawn or parked."""
    if not conditional(gw, job):
        return None
    charge = await upstream_charge(gw, job)
    if charge.charge is Charge.NOT_CHARGED:
        return None
    if charge.charge in (Charge.LIVE, Charge.UNREADABLE):
        due = refund_after(charge) if charge.charge is Charge.LIVE else after(UNREADABLE_PAUSE_S)
        async with core_transaction(gw.engine) as session:
            await transition(
                session, job.id, REFUNDING, event="refund_postponed", next_check_at=due
            )
        return await load_job(gw.autocommit, job.id)
    full = gw.settings.refund_policy is RefundPolicy.FULL
    async with core_transaction(gw.engine) as session:
        if charge.charge is Charge.CHARGED:
            await _record_spend(session, gw, job, charge)
            if full and not await refund_limit.withheld(session, gw, job, True):
                return None  # the refund goes on, counted as one the operator paid for
            code = refund_limit.CODE if full else CHARGED_LATE
            await _withdraw(session, job, code, charge)
        elif full:  # unknowable: counted as paid for, as when the job failed
            if not await refund_limit.withheld(session, gw, job, None):
                return None
            await _withdraw(session, job, refund_limit.CODE, charge)
        else:
            await transition(
                session,
                job.id,
                REFUNDING,
                event="fail_undecided",
                state=JobState.NEEDS_ATTENTION.value,
                **_ended(job, "whether the upstream charged us cannot be known"),
            )
    return await load_job(gw.autocommit, job.id)


async def _record_spend(session: Executor, gw: Gateway, job: Job, charge: UpstreamCharge) -> None:
    """The upstream spend, recorded once (a racing actor finds upstream_tx set)."""
    assert charge.tx is not None
    written = await transition(
        session,
        job.id,
        REFUNDING,
        event="upstream_spend_found",
        still_null=("upstream_tx",),
        upstream_tx=charge.tx,
    )
    if written is not None:
        await JobRepository(session).record_upstream(job, gw.settings.hot_wallet_address, charge.tx)


async def _withdraw(session: Executor, job: Job, code: str, charge: UpstreamCharge) -> None:
    if code == CHARGED_LATE:
        why = f"our upstream payment was executed after the failure (transaction {charge.tx})"
    else:
        why = f"no refund: {code}"
    await transition(
        session,
        job.id,
        REFUNDING,
        event="refund_withdrawn",
        state=JobState.FAILED.value,
        refund_amount=None,
        **_ended(job, why, code),
    )


def _ended(job: Job, why: str, code: str | None = None) -> dict[str, Any]:
    message = f"{why}; {job.error_message or ''}"[:2000]
    return {
        "error_code": code or job.error_code,
        "error_message": message,
        "finished_at": utcnow(),
        "next_check_at": None,
    }
