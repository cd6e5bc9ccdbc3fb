"""The paid request: verify → record → settle → buy upstream → submit, each step persisted.

Every step commits its state before the next one talks to the outside world, so a crash at
any point leaves a row the recovery worker can resume (see app.jobs.recovery).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from app.context import Gateway
from app.core.db import transaction
from app.core.errors import AppError, Conflict, PaymentOutcomeUnknown, ServiceUnavailable
from app.core.settings import SettlementOrder
from app.jobs.models import ANSWERED_STATES, Job, JobState
from app.jobs.repository import JobRepository, utcnow
from app.jobs.steps import buy_upstream, settle_client_payment
from app.payments.facilitator import FacilitatorUnavailable, SettleOutcome, verify_payment
from app.payments.incoming import IncomingPayment, PaymentRejected
from app.upstream.errors import UpstreamError, UpstreamPriceTooHigh

JOB_ID_BYTES = 18  # 144 random bits: job ids are capabilities


def new_job_id() -> str:
    """An unguessable job id."""
    return "job_" + secrets.token_urlsafe(JOB_ID_BYTES)


def fingerprint(method: str, path: str, body: dict[str, object], price: int) -> str:
    """What makes two requests 'the same request' for idempotency."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method}\n{path}\n{price}\n{canonical}".encode()).hexdigest()


async def _existing(gw: Gateway, job: Job, fp: str) -> Job:
    """A retry of a known payment: same request → same job; different request → 409."""
    if job.fingerprint != fp:
        raise Conflict(
            "this payment (or idempotency key) already bought a different request",
            code="idempotency_conflict",
            details={"jobId": job.id},
        )
    return await wait_until_answered(gw, job.id)


async def wait_until_answered(gw: Gateway, job_id: str) -> Job:
    """Wait while another request (or replica) is still processing this job."""
    s = gw.settings
    deadline = asyncio.get_running_loop().time() + s.facilitator_timeout_s + s.upstream_timeout_s
    delay = 0.05
    while True:
        async with gw.sessions() as session:
            job = await JobRepository(session).get(job_id)
        assert job is not None
        if job.state in ANSWERED_STATES or (job.state == JobState.VERIFIED and job.settle_attempts):
            return job
        if asyncio.get_running_loop().time() > deadline:
            return job
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def _spend_gate(gw: Gateway, body: dict[str, object]) -> None:
    """Refuse to sell (before taking money) when the upstream costs too much or the cap is hit."""
    s = gw.settings
    try:
        quote = await gw.upstream.quote(body)
    except UpstreamError as exc:
        raise ServiceUnavailable(
            f"upstream is not quoting: {exc.message}", code="upstream_unavailable"
        ) from exc
    if quote.amount > s.max_upstream_price_atomic:
        raise ServiceUnavailable(
            UpstreamPriceTooHigh(quote.amount, s.max_upstream_price_atomic).message
            + "; not selling at a loss",
            code="upstream_price_above_ceiling",
        )
    async with gw.sessions() as session:
        spent = await JobRepository(session).upstream_spend_since(utcnow() - timedelta(days=1))
    if spent + quote.amount > s.daily_upstream_cap_atomic:
        raise ServiceUnavailable(
            "daily upstream spend cap reached; try again later", code="daily_spend_cap_reached"
        )


async def purchase(
    gw: Gateway,
    *,
    route: str,
    body: dict[str, object],
    payment: IncomingPayment,
    idempotency_key: str | None,
) -> Job:
    """Turn a paid request into a job, exactly once per payment."""
    fp = fingerprint("POST", route, body, payment.value)
    async with gw.sessions() as session:
        repo = JobRepository(session)
        known = await repo.by_payment(payment.network, payment.payer, payment.nonce)
        if known is None and idempotency_key:
            known = await repo.by_idempotency_key(idempotency_key)
    if known is not None:
        return await _existing(gw, known, fp)

    try:
        verdict = await verify_payment(
            gw.facilitator, payment.payload, payment.requirements, gw.settings.facilitator_timeout_s
        )
    except FacilitatorUnavailable as exc:
        raise AppError(
            "the facilitator is unavailable; nothing was charged, retry with the same payment",
            code="facilitator_unavailable",
            status_code=503,
            headers={"Retry-After": "2"},
        ) from exc
    if not verdict.is_valid:
        reason = verdict.invalid_reason or "invalid_payment"
        raise PaymentRejected(reason, verdict.invalid_message or reason)

    await _spend_gate(gw, body)

    job = Job(
        id=new_job_id(),
        state=JobState.VERIFIED.value,
        route=route,
        request_body=body,
        fingerprint=fp,
        idempotency_key=idempotency_key,
        x402_version=payment.version,
        payer=payment.payer,
        pay_network=payment.network,
        pay_asset=gw.settings.asset,
        pay_amount=payment.value,
        pay_to=payment.pay_to,
        pay_nonce=payment.nonce,
        pay_valid_before=payment.valid_before,
        payment_payload=payment.payload_dict(),
        payment_requirements=payment.requirements_dict(),
        settle_attempts=0,
        upstream_attempts=0,
        next_check_at=utcnow() + timedelta(seconds=gw.settings.facilitator_timeout_s + 5),
    )
    try:
        async with transaction(gw.sessions) as session:
            session.add(job)
    except IntegrityError:
        # A concurrent request (maybe on another replica) recorded this payment first.
        async with gw.sessions() as session:
            repo = JobRepository(session)
            winner = await repo.by_payment(payment.network, payment.payer, payment.nonce)
            if winner is None and idempotency_key:
                winner = await repo.by_idempotency_key(idempotency_key)
        if winner is None:
            raise
        return await _existing(gw, winner, fp)

    if gw.settings.settlement_order is SettlementOrder.SETTLE_AFTER:
        return await _upstream_then_settle(gw, job)
    return await _settle_then_upstream(gw, job)


async def _settle_then_upstream(gw: Gateway, job: Job) -> Job:
    result = await settle_client_payment(gw, job.id)
    if result.outcome is SettleOutcome.UNKNOWN:
        raise PaymentOutcomeUnknown(
            "settlement outcome is unknown; retry with the SAME payment "
            "(it will not be charged twice)",
            details={"jobId": job.id, "reason": result.reason},
        )
    if result.outcome is SettleOutcome.REFUSED:
        raise PaymentRejected(result.reason, result.message)
    return await buy_upstream(gw, job.id)


async def _upstream_then_settle(gw: Gateway, job: Job) -> Job:
    """Operator opt-in: the client is charged only once the upstream accepted the job."""
    bought = await buy_upstream(gw, job.id, charge_first=False)
    if bought.state != JobState.SUBMITTED.value:
        return bought
    result = await settle_client_payment(gw, job.id)
    if result.outcome is SettleOutcome.REFUSED:
        raise PaymentRejected(result.reason, result.message)
    if result.outcome is SettleOutcome.UNKNOWN:
        raise PaymentOutcomeUnknown(
            "settlement outcome is unknown; retry with the SAME payment",
            details={"jobId": job.id, "reason": result.reason},
        )
    return await wait_until_answered(gw, job.id)
