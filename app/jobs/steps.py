"""Single state transitions of a job, shared by the request path and the recovery worker.

Each step reads the row, talks to one outside party, and writes the result with a
compare-and-set on the state, so two actors racing on one job cannot both advance it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection
from x402.http import PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER
from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements

from app.context import Gateway
from app.core.crashpoints import crash_point
from app.core.db import Executor, core_transaction, write_retrying
from app.jobs import onchain, reservation
from app.jobs.models import Job, JobState
from app.jobs.onchain import EXPIRY_MARGIN_S
from app.jobs.purchase_errors import unexpected_purchase_error
from app.jobs.refunding import fail_job
from app.jobs.repository import JobRepository, load_job, transition, utcnow
from app.jobs.reservation import TrueUp
from app.payments.facilitator import SettleOutcome, SettleResult, settle_payment
from app.upstream.client import SignedPurchase
from app.upstream.errors import UpstreamError, UpstreamUnavailable

MAX_UPSTREAM_ATTEMPTS = 3
MAX_SETTLE_ATTEMPTS = 12  # with exponential backoff capped at 5 min: about 40 min


class Settlement(NamedTuple):
    """A settle attempt's classified outcome and the job after it was recorded."""

    result: SettleResult
    job: Job
    recorded: bool  # False: somebody else moved the job first (and owns what comes next)


def _lease(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


async def settle_client_payment(
    gw: Gateway, job: Job, *, attempt_counted: bool = False, then_sign: bool = False
) -> Settlement:
    """Settle the client's stored payment once; persist SETTLED/REFUSED, schedule UNKNOWN.

    `attempt_counted`: the caller already counted this attempt and took the lease (a request
    that has just recorded the job). `then_sign`: on success, sign the upstream purchase and
    store it with the settlement in one transaction (see `record_settlement`).
    """
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
                [JobState.VERIFIED, JobState.SUBMITTED],
                settle_attempts=job.settle_attempts + 1,
                next_check_at=_lease(gw.settings.facilitator_timeout_s + 5),
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
    """Persist a classified settlement of the client's payment, and the job as it is now.

    With `upstream` signed (and within the daily cap), the charge and the upstream purchase
    are stored in one transaction: the job goes straight to upstream_signed, its first submit
    attempt counted, so the request sends it next without another write.
    """
    from_states = [JobState.VERIFIED, JobState.SUBMITTED]
    paid_state = JobState.PAID if job.state == JobState.VERIFIED.value else JobState(job.state)
    refusal: UpstreamError | None = upstream if isinstance(upstream, UpstreamError) else None
    async with core_transaction(gw.engine) as session:
        if result.outcome is SettleOutcome.SETTLED:
            assert result.tx is not None
            values: dict[str, Any] = {
                "state": paid_state.value,
                "settle_tx": result.tx,
                "error_code": None,
                "error_message": None,
                # Whoever settled buys the upstream next; the worker takes a PAID job over
                # only after this lease (when due at once, it raced the request to buy it).
                "next_check_at": _lease(gw.settings.upstream_timeout_s + 5)
                if paid_state is JobState.PAID
                else utcnow(),
            }
            reserved: TrueUp | None = None  # the signed amount counted against the cap
            if isinstance(upstream, SignedPurchase) and paid_state is JobState.PAID:
                reserved = await _reserve_spend(session, gw, job, upstream.amount)
                if reserved is None:
                    refusal = _CAP_REACHED
                else:
                    values |= _signed_values(gw, job, upstream) | reserved.values
            # The charge is recorded once, whoever settled.
            written = await transition(
                session, job.id, from_states, still_null=("settle_tx",), **values
            )
            if written is None:
                refusal = None  # somebody else recorded it and carries on with the job
                if reserved is not None:  # and our signature is never stored nor sent
                    await reservation.undo(session, reserved)
            else:
                await JobRepository(session).record_charge(written, result.tx)
        elif result.outcome is SettleOutcome.REFUSED and job.state == JobState.VERIFIED.value:
            written = await transition(
                session,
                job.id,
                [JobState.VERIFIED],
                state=JobState.PAYMENT_FAILED.value,
                error_code=result.reason,
                error_message=result.message,
                finished_at=utcnow(),
                next_check_at=None,
            )
        elif result.outcome is SettleOutcome.REFUSED:
            # settle_after: the upstream job is bought but the client's payment is refused.
            written = await transition(
                session,
                job.id,
                [JobState.SUBMITTED],
                state=JobState.NEEDS_ATTENTION.value,
                error_code=REFUSED_AFTER_PURCHASE,
                error_message=f"client payment refused after the upstream job was bought "
                f"({result.reason}): {result.message}",
                finished_at=utcnow(),
                next_check_at=None,
            )
        elif _give_up_settling(gw, job):
            # Without a chain to ask, an outcome that stays unknown goes to the operator.
            written = await transition(
                session,
                job.id,
                from_states,
                state=JobState.NEEDS_ATTENTION.value,
                error_code="settlement_unresolved",
                error_message=f"settlement outcome still unknown ({result.reason}) after "
                f"{job.settle_attempts} attempts",
                finished_at=utcnow(),
                next_check_at=None,
            )
        else:
            backoff = min(5 * 2 ** min(max(job.settle_attempts - 1, 0), 6), 300)
            # error_code marks the outcome as unknown for concurrent retries waiting on it.
            written = await transition(
                session,
                job.id,
                from_states,
                next_check_at=_lease(backoff),
                error_code=result.reason,
                error_message=result.message,
            )
        if result.outcome is not SettleOutcome.SETTLED:
            await reservation.release_unspent(session, job.id)
    if written is None:
        return Settlement(result, await load_job(gw.sessions, job.id), recorded=False)
    if refusal is not None and written.state == JobState.PAID.value:
        failed = await fail_job(gw, job.id, refusal.code, refusal.message, upstream_charged=False)
        return Settlement(result, failed, recorded=True)
    return Settlement(result, written, recorded=True)


_CAP_REACHED = UpstreamError("daily_spend_cap_reached", "daily upstream spend cap reached")
REFUSED_AFTER_PURCHASE = "client_payment_refused_after_purchase"


def _give_up_settling(gw: Gateway, job: Job) -> bool:
    """Too many unknown attempts, or an expired authorization no chain can vouch for."""
    if job.settle_attempts >= MAX_SETTLE_ATTEMPTS:
        return True
    return gw.chain is None and time.time() > job.pay_valid_before + EXPIRY_MARGIN_S


def header_name_for(header_value: str) -> str:
    """The header a stored payment goes in, from its x402 version."""
    version = json.loads(base64.b64decode(header_value)).get("x402Version", 2)
    return X_PAYMENT_HEADER if version == 1 else PAYMENT_SIGNATURE_HEADER


async def sign_upstream(gw: Gateway, job: Job) -> SignedPurchase | UpstreamError:
    """One upstream authorization for this job's request (not stored yet), or why not."""
    try:
        quote = await gw.upstream.quote(job.request_body)
        return await gw.upstream.sign(
            quote, max_amount=gw.settings.max_upstream_price_atomic, paid=job.pay_amount
        )
    except UpstreamError as exc:  # includes UpstreamPriceTooHigh, UpstreamPriceAbovePaid
        return exc
    except Exception as exc:  # a bug or an answer nobody foresaw: the job fails, logged
        return unexpected_purchase_error(job.id, exc)


def _signed_values(gw: Gateway, job: Job, signed: SignedPurchase) -> dict[str, Any]:
    """Columns that store a signed upstream purchase, its first submit attempt counted."""
    return {
        "state": JobState.UPSTREAM_SIGNED.value,
        "upstream_payment_header": signed.header_value,
        "upstream_nonce": signed.nonce,
        "upstream_amount": signed.amount,
        "upstream_pay_to": signed.pay_to,
        "upstream_valid_before": signed.valid_before,
        "upstream_attempts": job.upstream_attempts + 1,
        "next_check_at": _lease(gw.settings.upstream_timeout_s + 5),
    }


async def buy_upstream(gw: Gateway, job: Job, *, charge_first: bool = True) -> Job:
    """Sign (once) and submit the upstream purchase for a job."""
    ready = JobState.PAID if charge_first else JobState.VERIFIED
    if job.state == ready.value and job.upstream_payment_header is None:
        signed = await sign_upstream(gw, job)
        if isinstance(signed, UpstreamError):
            return await fail_job(gw, job.id, signed.code, signed.message, upstream_charged=False)
        written = None
        async with core_transaction(gw.engine) as session:
            reserved = await _reserve_spend(session, gw, job, signed.amount)
            if reserved is not None:
                values = _signed_values(gw, job, signed) | reserved.values
                written = await transition(session, job.id, [ready], **values)
                if written is None:
                    await reservation.undo(session, reserved)
        if written is None:
            current = await load_job(gw.sessions, job.id)
            if reserved is None and current.state == ready.value:
                code, message = _CAP_REACHED.code, _CAP_REACHED.message
                return await fail_job(gw, job.id, code, message, upstream_charged=False)
            return current  # somebody else moved it meanwhile
        crash_point("after_upstream_signed")
        return await submit_upstream(gw, written, attempt_counted=True)
    if job.state != JobState.UPSTREAM_SIGNED.value:
        return job
    return await submit_upstream(gw, job)


async def _reserve_spend(session: Executor, gw: Gateway, job: Job, amount: int) -> TrueUp | None:
    """Count the signed `amount` against the daily cap in place of the job's reservation, in
    the caller's transaction; None when a higher amount would exceed the cap."""
    return await reservation.true_up(session, job, amount, gw.settings.daily_upstream_cap_atomic)


async def submit_upstream(gw: Gateway, job: Job, *, attempt_counted: bool = False) -> Job:
    """Send the stored upstream payment (the same one on every retry).

    `attempt_counted`: the caller's last write already counted this attempt and took the lease.
    """
    if not attempt_counted:
        async with core_transaction(gw.engine) as session:
            counted = await transition(
                session,
                job.id,
                [JobState.UPSTREAM_SIGNED],
                upstream_attempts=job.upstream_attempts + 1,
                next_check_at=_lease(gw.settings.upstream_timeout_s + 5),
            )
        if counted is None:
            return await load_job(gw.sessions, job.id)  # somebody else moved it meanwhile
        job = counted
    header = job.upstream_payment_header
    assert header is not None
    attempts = job.upstream_attempts
    try:
        submission = await gw.upstream.submit(job.request_body, header_name_for(header), header)
    except UpstreamUnavailable as exc:
        if attempts < MAX_UPSTREAM_ATTEMPTS:
            async with core_transaction(gw.engine) as session:
                written = await transition(
                    session,
                    job.id,
                    [JobState.UPSTREAM_SIGNED],
                    error_code=exc.code,
                    error_message=exc.message,
                    next_check_at=_lease(2 * attempts),
                )
            return written or await load_job(gw.sessions, job.id)
        return await fail_job(gw, job.id, exc.code, exc.message, upstream_charged=None)
    except UpstreamError as exc:
        return await fail_job(gw, job.id, exc.code, exc.message, upstream_charged=None)
    crash_point("after_upstream_submit")
    accepted = submission.job

    async def record_answer(session: AsyncConnection) -> Job | None:
        written = await transition(
            session,
            job.id,
            [JobState.UPSTREAM_SIGNED],
            state=JobState.SUBMITTED.value,
            upstream_job_id=accepted.job_id,
            upstream_request_id=accepted.request_id,
            upstream_status_url=str(accepted.status_url),
            upstream_tx=submission.tx,
            error_code=None,
            error_message=None,
            next_check_at=_lease(gw.settings.poll_interval_s),
        )
        if written is not None and submission.tx:
            await JobRepository(session).record_upstream(
                written, gw.settings.hot_wallet_address, submission.tx
            )
        return written

    # The upstream's answer cannot be asked for again (a resent payment is refused as used):
    # a database unreachable when writing it must not lose it. Retried for the lease: after
    # it, the worker may take the job over (and find its resent payment refused as used).
    lease = gw.settings.upstream_timeout_s + 5
    written = await write_retrying(gw.engine, record_answer, for_s=lease)
    if written is not None and not gw.upstream.statuses.origin_allowed(str(accepted.status_url)):
        # Paid for, but its status lives where we do not go: recorded, never read, failed.
        message = "the upstream's status URL is not on an allowed origin; it is never read"
        code = "upstream_status_url_refused"
        return await fail_job(gw, job.id, code, message, upstream_charged=True)
    return written or await load_job(gw.sessions, job.id)
