"""Buying the upstream: sign the purchase once, store it, send it, record the answer.

Each step reads the row, talks to one outside party, and writes the result with a
compare-and-set on the state (a declared arc), so two actors racing on one job cannot both
advance it. Settling the client's payment is in `app.jobs.settlement`.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from x402.http import PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER

from app.context import Gateway
from app.core.crashpoints import crash_point
from app.core.db import Executor, core_transaction, write_retrying
from app.core.metrics import UPSTREAM_SECONDS
from app.jobs import reservation
from app.jobs.models import Job, JobState
from app.jobs.policy import MAX_UPSTREAM_ATTEMPTS, after, upstream_lease_s, upstream_retry_s
from app.jobs.purchase_errors import unexpected_purchase_error
from app.jobs.refunding import fail_job
from app.jobs.repository import JobRepository, load_job
from app.jobs.reservation import TrueUp
from app.jobs.transitions import transition
from app.upstream.client import SignedPurchase, Submission
from app.upstream.errors import UpstreamError, UpstreamUnavailable

CAP_REACHED = UpstreamError("daily_spend_cap_reached", "daily upstream spend cap reached")


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


def signed_values(gw: Gateway, job: Job, signed: SignedPurchase) -> dict[str, Any]:
    """Columns that store a signed upstream purchase, its first submit attempt counted."""
    return {
        "state": JobState.UPSTREAM_SIGNED.value,
        "upstream_payment_header": signed.header_value,
        "upstream_nonce": signed.nonce,
        "upstream_amount": signed.amount,
        "upstream_pay_to": signed.pay_to,
        "upstream_valid_before": signed.valid_before,
        "upstream_attempts": job.upstream_attempts + 1,
        "next_check_at": after(upstream_lease_s(gw.settings)),
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
            reserved = await reserve_spend(session, gw, job, signed.amount)
            if reserved is not None:
                values = signed_values(gw, job, signed) | reserved.values
                written = await transition(
                    session, job.id, [ready], event="upstream_signed", **values
                )
                if written is None:
                    await reservation.undo(session, reserved)
        if written is None:
            current = await load_job(gw.autocommit, job.id)
            if reserved is None and current.state == ready.value:
                code, message = CAP_REACHED.code, CAP_REACHED.message
                return await fail_job(gw, job.id, code, message, upstream_charged=False)
            return current  # somebody else moved it meanwhile
        crash_point("after_upstream_signed")
        return await submit_upstream(gw, written, attempt_counted=True)
    if job.state != JobState.UPSTREAM_SIGNED.value:
        return job
    return await submit_upstream(gw, job)


async def reserve_spend(session: Executor, gw: Gateway, job: Job, amount: int) -> TrueUp | None:
    """Count the signed `amount` against the daily cap in place of the job's reservation, in
    the caller's transaction; None when a higher amount would exceed the cap."""
    return await reservation.true_up(session, job, amount, gw.settings.daily_upstream_cap_atomic)


async def _timed_submit(gw: Gateway, body: dict[str, Any], header: str) -> Submission:
    """The upstream's answer to the stored payment, its latency observed."""
    started = time.perf_counter()
    try:
        return await gw.upstream.submit(body, header_name_for(header), header)
    finally:
        UPSTREAM_SECONDS.observe(time.perf_counter() - started)


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
                event="submit_counted",
                upstream_attempts=job.upstream_attempts + 1,
                next_check_at=after(upstream_lease_s(gw.settings)),
            )
        if counted is None:
            return await load_job(gw.autocommit, job.id)  # somebody else moved it meanwhile
        job = counted
    header = job.upstream_payment_header
    assert header is not None
    attempts = job.upstream_attempts
    try:
        submission = await _timed_submit(gw, job.request_body, header)
    except UpstreamUnavailable as exc:
        if attempts < MAX_UPSTREAM_ATTEMPTS:
            async with core_transaction(gw.engine) as session:
                written = await transition(
                    session,
                    job.id,
                    [JobState.UPSTREAM_SIGNED],
                    event="submit_retry",
                    error_code=exc.code,
                    error_message=exc.message,
                    next_check_at=after(upstream_retry_s(attempts)),
                )
            return written or await load_job(gw.autocommit, job.id)
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
            event="upstream_accepted",
            state=JobState.SUBMITTED.value,
            upstream_job_id=accepted.job_id,
            upstream_request_id=accepted.request_id,
            upstream_status_url=str(accepted.status_url),
            upstream_tx=submission.tx,
            error_code=None,
            error_message=None,
            next_check_at=after(gw.settings.poll_interval_s),
        )
        if written is not None and submission.tx:
            await JobRepository(session).record_upstream(
                written, gw.settings.hot_wallet_address, submission.tx
            )
        return written

    # The upstream's answer cannot be asked for again (a resent payment is refused as used):
    # a database unreachable when writing it must not lose it. Retried for the lease: after
    # it, the worker may take the job over (and find its resent payment refused as used).
    lease = upstream_lease_s(gw.settings)
    written = await write_retrying(gw.engine, record_answer, for_s=lease)
    if written is not None and not gw.upstream.statuses.origin_allowed(str(accepted.status_url)):
        # Paid for, but its status lives where we do not go: recorded, never read, failed.
        message = "the upstream's status URL is not on an allowed origin; it is never read"
        code = "upstream_status_url_refused"
        return await fail_job(gw, job.id, code, message, upstream_charged=True)
    return written or await load_job(gw.autocommit, job.id)
