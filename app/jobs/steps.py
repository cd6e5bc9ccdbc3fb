"""Single state transitions of a job, shared by the request path and the recovery worker.

Each step reads the row, talks to one outside party, and writes the result with a
compare-and-set on the state, so two actors racing on one job cannot both advance it.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta

from x402.http import PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER
from x402.schemas import SettleResponse
from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements

from app.context import Gateway
from app.core.crashpoints import crash_point
from app.core.db import transaction
from app.jobs.models import Job, JobState
from app.jobs.refunding import fail_job
from app.jobs.repository import JobRepository, load_job, transition, utcnow
from app.payments.facilitator import SettleOutcome, SettleResult, settle_payment
from app.upstream.errors import (
    UpstreamError,
    UpstreamPriceTooHigh,
    UpstreamUnavailable,
)

MAX_UPSTREAM_ATTEMPTS = 3
MAX_SETTLE_ATTEMPTS = 12  # with exponential backoff capped at 5 min: about 40 min
EXPIRY_MARGIN_S = 60  # wall clock vs block time


def _lease(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


async def settle_client_payment(gw: Gateway, job_id: str) -> SettleResult:
    """Settle the client's stored payment once; persist SETTLED/REFUSED, schedule UNKNOWN."""
    job = await load_job(gw.sessions, job_id)
    from_states = [JobState.VERIFIED, JobState.SUBMITTED]
    payload = parse_payment_payload(job.payment_payload)
    requirements = parse_payment_requirements(job.x402_version, job.payment_requirements)
    if job.settle_attempts and gw.chain is not None:
        # An earlier attempt may have landed: ask the chain before broadcasting again.
        unknown = SettleResult(SettleOutcome.UNKNOWN, None, "settle_retry", "retrying settlement")
        found = await _reconcile_settlement(gw, job, unknown)
        if found.outcome is not SettleOutcome.UNKNOWN:
            await record_settlement(gw, job, found)
            return found
    async with transaction(gw.sessions) as session:
        await transition(
            session,
            job_id,
            from_states,
            settle_attempts=job.settle_attempts + 1,
            next_check_at=_lease(gw.settings.facilitator_timeout_s + 5),
        )
    result = await settle_payment(
        gw.facilitator, payload, requirements, gw.settings.facilitator_timeout_s
    )
    if result.outcome is SettleOutcome.UNKNOWN and gw.chain is not None:
        result = await _reconcile_settlement(gw, job, result)
    await record_settlement(gw, job, result)
    return result


async def _reconcile_settlement(gw: Gateway, job: Job, result: SettleResult) -> SettleResult:
    """Ask the chain whether an unknown settlement actually happened.

    SETTLED when the authorization was used; REFUSED when it expired unused (nobody can ever
    execute it now); otherwise `result` unchanged.
    """
    assert gw.chain is not None
    try:
        used, tx = await gw.chain.authorization_outcome(job.payer, job.pay_nonce)
    except Exception:
        return result
    if not used:
        if time.time() > job.pay_valid_before + EXPIRY_MARGIN_S:
            return SettleResult(
                SettleOutcome.REFUSED,
                None,
                "authorization_expired_unused",
                "the payment authorization expired without being settled; nothing was charged",
            )
        return result
    if tx is None:
        return result
    response = SettleResponse(success=True, transaction=tx, network=job.pay_network)
    return SettleResult(SettleOutcome.SETTLED, response, "", "")


async def record_settlement(gw: Gateway, job: Job, result: SettleResult) -> None:
    """Persist a classified settlement of the client's payment."""
    paid_state = JobState.PAID if job.state == JobState.VERIFIED.value else JobState(job.state)
    from_states = [JobState.VERIFIED, JobState.SUBMITTED]
    async with transaction(gw.sessions) as session:
        if result.outcome is SettleOutcome.SETTLED:
            assert result.tx is not None
            if await transition(
                session,
                job.id,
                from_states,
                Job.settle_tx.is_(None),  # the charge is recorded once, whoever settled
                state=paid_state.value,
                settle_tx=result.tx,
                error_code=None,
                error_message=None,
                # Whoever settled buys the upstream next; the worker takes a PAID job over
                # only after this lease (when due at once, it raced the request to buy it).
                next_check_at=_lease(gw.settings.upstream_timeout_s + 5)
                if paid_state is JobState.PAID
                else utcnow(),
            ):
                JobRepository(session).record_charge(job, result.tx)
        elif result.outcome is SettleOutcome.REFUSED and job.state == JobState.VERIFIED.value:
            await transition(
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
            await transition(
                session,
                job.id,
                [JobState.SUBMITTED],
                state=JobState.NEEDS_ATTENTION.value,
                error_code=result.reason,
                error_message="client payment refused after the upstream job was bought: "
                + result.message,
                finished_at=utcnow(),
                next_check_at=None,
            )
        elif _give_up_settling(gw, job):
            # Without a chain to ask, an outcome that stays unknown goes to the operator.
            await transition(
                session,
                job.id,
                from_states,
                state=JobState.NEEDS_ATTENTION.value,
                error_code="settlement_unresolved",
                error_message=f"settlement outcome still unknown ({result.reason}) after "
                f"{job.settle_attempts + 1} attempts",
                finished_at=utcnow(),
                next_check_at=None,
            )
        else:
            backoff = min(5 * 2 ** min(job.settle_attempts, 6), 300)
            # error_code marks the outcome as unknown for concurrent retries waiting on it.
            await transition(
                session,
                job.id,
                from_states,
                next_check_at=_lease(backoff),
                error_code=result.reason,
                error_message=result.message,
            )


def _give_up_settling(gw: Gateway, job: Job) -> bool:
    """Too many unknown attempts, or an expired authorization no chain can vouch for."""
    if job.settle_attempts + 1 >= MAX_SETTLE_ATTEMPTS:
        return True
    return gw.chain is None and time.time() > job.pay_valid_before + EXPIRY_MARGIN_S


def header_name_for(header_value: str) -> str:
    """The header a stored payment goes in, from its x402 version."""
    version = json.loads(base64.b64decode(header_value)).get("x402Version", 2)
    return X_PAYMENT_HEADER if version == 1 else PAYMENT_SIGNATURE_HEADER


async def buy_upstream(gw: Gateway, job_id: str, *, charge_first: bool = True) -> Job:
    """Sign (once) and submit the upstream purchase for a job."""
    job = await load_job(gw.sessions, job_id)
    ready = JobState.PAID if charge_first else JobState.VERIFIED
    if job.state == ready.value and job.upstream_payment_header is None:
        try:
            quote = await gw.upstream.quote(job.request_body)
            signed = await gw.upstream.sign(quote, max_amount=gw.settings.max_upstream_price_atomic)
        except UpstreamPriceTooHigh as exc:
            return await fail_job(gw, job_id, exc.code, exc.message, upstream_charged=False)
        except UpstreamError as exc:
            return await fail_job(gw, job_id, exc.code, exc.message, upstream_charged=False)
        if not await _within_daily_cap(gw, signed.amount):
            return await fail_job(
                gw,
                job_id,
                "daily_spend_cap_reached",
                "daily upstream spend cap reached",
                upstream_charged=False,
            )
        async with transaction(gw.sessions) as session:
            await transition(
                session,
                job_id,
                [ready],
                state=JobState.UPSTREAM_SIGNED.value,
                upstream_payment_header=signed.header_value,
                upstream_nonce=signed.nonce,
                upstream_amount=signed.amount,
                upstream_pay_to=signed.pay_to,
                upstream_valid_before=signed.valid_before,
                next_check_at=_lease(gw.settings.upstream_timeout_s + 5),
            )
        crash_point("after_upstream_signed")
        job = await load_job(gw.sessions, job_id)
    if job.state != JobState.UPSTREAM_SIGNED.value:
        return job
    return await submit_upstream(gw, job_id)


async def _within_daily_cap(gw: Gateway, amount: int) -> bool:
    """Whether signing `amount` more keeps the last 24 h of upstream spend under the cap."""
    async with gw.sessions() as session:
        spent = await JobRepository(session).upstream_spend_since(utcnow() - timedelta(days=1))
    return spent + amount <= gw.settings.daily_upstream_cap_atomic


async def submit_upstream(gw: Gateway, job_id: str) -> Job:
    """Send the stored upstream payment (the same one on every retry)."""
    job = await load_job(gw.sessions, job_id)
    assert job.upstream_payment_header is not None
    attempts = job.upstream_attempts + 1
    async with transaction(gw.sessions) as session:
        await transition(
            session,
            job_id,
            [JobState.UPSTREAM_SIGNED],
            upstream_attempts=attempts,
            next_check_at=_lease(gw.settings.upstream_timeout_s + 5),
        )
    header = job.upstream_payment_header
    try:
        submission = await gw.upstream.submit(job.request_body, header_name_for(header), header)
    except UpstreamUnavailable as exc:
        if attempts < MAX_UPSTREAM_ATTEMPTS:
            async with transaction(gw.sessions) as session:
                await transition(
                    session,
                    job_id,
                    [JobState.UPSTREAM_SIGNED],
                    error_code=exc.code,
                    error_message=exc.message,
                    next_check_at=_lease(2 * attempts),
                )
            return await load_job(gw.sessions, job_id)
        return await fail_job(gw, job_id, exc.code, exc.message, upstream_charged=None)
    except UpstreamError as exc:
        return await fail_job(gw, job_id, exc.code, exc.message, upstream_charged=None)
    crash_point("after_upstream_submit")
    accepted = submission.job
    async with transaction(gw.sessions) as session:
        if (
            await transition(
                session,
                job_id,
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
            and submission.tx
        ):
            JobRepository(session).record_upstream(
                job, gw.settings.hot_wallet_address, submission.tx
            )
    return await load_job(gw.sessions, job_id)
