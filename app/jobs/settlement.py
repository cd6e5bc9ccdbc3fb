"""Settling the client's payment, and recording each outcome with its own declared write."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements

from app.context import Gateway
from app.core.db import Executor, core_transaction
from app.jobs import onchain, reservation
from app.jobs.models import Job, JobState
from app.jobs.onchain import EXPIRY_MARGIN_S
from app.jobs.policy import (
    MAX_SETTLE_ATTEMPTS,
    after,
    settle_backoff_s,
    settle_lease_s,
    upstream_lease_s,
)
from app.jobs.refunding import fail_job
from app.jobs.repository import JobRepository, load_job, utcnow
from app.jobs.reservation import TrueUp
from app.jobs.steps import CAP_REACHED, reserve_spend, sign_upstream, signed_values
from app.jobs.transitions import transition
from app.payments.facilitator import SettleOutcome, SettleResult, settle_payment
from app.upstream.client import SignedPurchase
from app.upstream.errors import UpstreamError

REFUSED_AFTER_PURCHASE = "client_payment_refused_after_purchase"
# The states a settlement is recorded from: before anything is bought, or (settle_after)
# once the upstream accepted the job.
UNSETTLED = [JobState.VERIFIED, JobState.SUBMITTED]


class Settlement(NamedTuple):
    """A settle attempt's classified outcome and the job after it was recorded."""

    result: SettleResult
    job: Job
    recorded: bool  # False: somebody else moved the job first (and owns what comes next)


async def settle_client_payment(
    gw: Gateway, job: Job, *, attempt_counted: bool = False, then_sign: bool = False
) -> Settlement:
    """Settle the client's stored payment once; persist SETTLED/REFUSED, schedule UNKNOWN.

    `attempt_counted`: the caller already counted this attempt and took the lease (a request
    that has just recorded the job). `then_sign`: on success, sign the upstream purchase and
    store it with the settlement in one transaction (see `record_settlement`).
    """
    if job.paid_with_key:  # paid by its debit: there is no x402 payment to settle
        raise RuntimeError(f"refusing to settle key-paid job {job.id}")
    payload = parse_payment_payload(job.payment_payload)
    requirements = parse_payment_requirements(job.x402_version, job.payment_requirements)
    if not attempt_counted:
        if job.settle_attempts and gw.chain is not None:
            # An earlier attempt may have landed: ask the chain before broadcasting again.
            unknown = SettleResult(
                SettleOutcome.UNKNOWN, None, "settle_retry", "retrying settlement"
            )
            found = await onchain.reconcile_settlement(gw, job, unknown)
            if found.outcome is not SettleOutcome.UNKNOWN:
                return await record_settlement(gw, job, found)
        async with core_transaction(gw.engine) as session:
            counted = await transition(
                session,
                job.id,
                UNSETTLED,
                event="settle_counted",
                settle_attempts=job.settle_attempts + 1,
                next_check_at=after(settle_lease_s(gw.settings)),
            )
        job = counted or job
    # The upstream purchase is signed while the facilitator settles (the loop is idle then);
    # it stays in memory, and is stored (then sent) only if the client's payment settled.
    signing = asyncio.create_task(sign_upstream(gw, job)) if then_sign else None
    try:
        result = await settle_payment(
            gw.facilitator, payload, requirements, gw.settings.facilitator_timeout_s
        )
        result = await onchain.confirm_settlement(gw, job, result)
    except BaseException:
        _drop(signing)
        raise
    upstream = None
    if signing is not None and result.outcome is SettleOutcome.SETTLED:
        upstream = await signing
    else:
        _drop(signing)
    return await record_settlement(gw, job, result, upstream)


def _drop(signing: asyncio.Task[SignedPurchase | UpstreamError] | None) -> None:
    """Abandon a signature nobody will use (and retrieve its outcome: no warning later)."""
    if signing is not None:
        signing.cancel()
        signing.add_done_callback(lambda t: t.cancelled() or t.exception())


async def record_settlement(
    gw: Gateway,
    job: Job,
    result: SettleResult,
    upstream: SignedPurchase | UpstreamError | None = None,
) -> Settlement:
    """Persist a classified settlement of the client's payment, and the job as it is now."""
    refusal: UpstreamError | None = None
    async with core_transaction(gw.engine) as session:
        if result.outcome is SettleOutcome.SETTLED:
            written, refusal = await _record_settled(session, gw, job, result, upstream)
        else:
            if result.outcome is SettleOutcome.REFUSED:
                written = await _record_refused(session, job, result)
            elif _give_up_settling(gw, job):
                written = await _record_unresolved(session, job, result)
            else:
                written = await _record_unknown(session, job, result)
            await reservation.release_unspent(session, job.id)
    if written is None:
        return Settlement(result, await load_job(gw.autocommit, job.id), recorded=False)
    if refusal is not None and written.state == JobState.PAID.value:
        failed = await fail_job(gw, job.id, refusal.code, refusal.message, upstream_charged=False)
        return Settlement(result, failed, recorded=True)
    return Settlement(result, written, recorded=True)


async def _record_settled(
    session: Executor,
    gw: Gateway,
    job: Job,
    result: SettleResult,
    upstream: SignedPurchase | UpstreamError | None,
) -> tuple[Job | None, UpstreamError | None]:
    """The charge, recorded once whoever settled (guarded by settle_tx IS NULL); and why the
    upstream will not be bought, if it will not.

    With `upstream` signed (and within the daily cap), the charge and the upstream purchase
    are stored in one write: the job goes straight to upstream_signed, its first submit
    attempt counted, so the request sends it next without another write.
    """
    assert result.tx is not None
    refusal = upstream if isinstance(upstream, UpstreamError) else None
    values: dict[str, Any] = {"settle_tx": result.tx, "error_code": None, "error_message": None}
    reserved: TrueUp | None = None  # the signed amount counted against the cap
    if job.state == JobState.VERIFIED.value:
        # Whoever settled buys the upstream next; the worker takes a PAID job over only
        # after this lease (when due at once, it raced the request to buy it).
        event = "settled"
        values |= {
            "state": JobState.PAID.value,
            "next_check_at": after(upstream_lease_s(gw.settings)),
        }
        if isinstance(upstream, SignedPurchase):
            reserved = await reserve_spend(session, gw, job, upstream.amount)
            if reserved is None:
                refusal = CAP_REACHED
            else:
                event = "settled_and_signed"
                values |= signed_values(gw, job, upstream) | reserved.values
        from_states = [JobState.VERIFIED]
    else:  # settle_after: the upstream job is bought; the worker polls it next
        event, from_states = "settled_after_purchase", [JobState.SUBMITTED]
        values["next_check_at"] = utcnow()
    written = await transition(
        session, job.id, from_states, event=event, still_null=("settle_tx",), **values
    )
    if written is None:  # somebody else recorded it and carries on with the job
        if reserved is not None:  # and our signature is never stored nor sent
            await reservation.undo(session, reserved)
        return None, None
    await JobRepository(session).record_charge(written, result.tx)
    return written, refusal


async def _record_refused(session: Executor, job: Job, result: SettleResult) -> Job | None:
    """Nothing charged: the job ends (parked when the upstream job is bought already)."""
    if job.state == JobState.VERIFIED.value:
        return await transition(
            session,
            job.id,
            [JobState.VERIFIED],
            event="settle_refused",
            state=JobState.PAYMENT_FAILED.value,
            error_code=result.reason,
            error_message=result.message,
            finished_at=utcnow(),
            next_check_at=None,
        )
    # settle_after: the upstream job is bought but the client's payment is refused.
    return await transition(
        session,
        job.id,
        [JobState.SUBMITTED],
        event="settle_refused_after_purchase",
        state=JobState.NEEDS_ATTENTION.value,
        error_code=REFUSED_AFTER_PURCHASE,
        error_message=f"client payment refused after the upstream job was bought "
        f"({result.reason}): {result.message}",
        finished_at=utcnow(),
        next_check_at=None,
    )


async def _record_unresolved(session: Executor, job: Job, result: SettleResult) -> Job | None:
    """An outcome that stays unknown goes to the operator."""
    return await transition(
        session,
        job.id,
        UNSETTLED,
        event="settle_unresolved",
        state=JobState.NEEDS_ATTENTION.value,
        error_code="settlement_unresolved",
        error_message=f"settlement outcome still unknown ({result.reason}) after "
        f"{job.settle_attempts} attempts",
        finished_at=utcnow(),
        next_check_at=None,
    )


async def _record_unknown(session: Executor, job: Job, result: SettleResult) -> Job | None:
    """An unknown outcome, tried again after a backoff."""
    # error_code marks the outcome as unknown for concurrent retries waiting on it.
    return await transition(
        session,
        job.id,
        UNSETTLED,
        event="settle_unknown_retry",
        next_check_at=after(settle_backoff_s(job.settle_attempts)),
        error_code=result.reason,
        error_message=result.message,
    )


def _give_up_settling(gw: Gateway, job: Job) -> bool:
    """Too many unknown attempts, or an expired authorization no chain can vouch for."""
    if job.settle_attempts >= MAX_SETTLE_ATTEMPTS:
        return True
    return gw.chain is None and time.time() > job.pay_valid_before + EXPIRY_MARGIN_S
