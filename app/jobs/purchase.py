"""The paid request: verify → record → settle → buy upstream → submit, each step persisted.

Every step commits its state before the next one talks to the outside world, so a crash at
any point leaves a row the recovery worker can resume (see app.jobs.workers).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.context import Gateway
from app.core.crashpoints import crash_point
from app.core.db import core_transaction
from app.core.errors import (
    Conflict,
    PaymentOutcomeUnknown,
    RetryLater,
    ServiceUnavailable,
)
from app.core.modes import SettlementOrder
from app.core.ratelimit import check_verify_rate
from app.jobs import admission, spend
from app.jobs.models import ANSWERED_STATES, Job, JobState
from app.jobs.policy import after, request_lease_s, settle_lease_s
from app.jobs.purchase_errors import guarded
from app.jobs.repository import JOB_ID_BY_PAYMENT, JobRepository, load_job
from app.jobs.settlement import settle_client_payment
from app.jobs.steps import buy_upstream, submit_upstream
from app.jobs.waiting import answer_soon, wait_until_answered
from app.payments.facilitator import FacilitatorUnavailable, SettleOutcome, verify_payment
from app.payments.incoming import IncomingPayment, PaymentRejected
from app.payments.signature import same_authorization
from app.upstream.errors import UpstreamError, UpstreamPriceAbovePaid, UpstreamPriceTooHigh

JOB_ID_BYTES = 18  # 144 random bits: job ids are capabilities
# Whether the payment is known and the window's upstream spend: one round trip, one snapshot.
_KNOWN_AND_SPENT = select(JOB_ID_BY_PAYMENT.label("known"), spend.SPENT_SINCE.label("spent"))


def new_job_id() -> str:
    """An unguessable job id."""
    return "job_" + secrets.token_urlsafe(JOB_ID_BYTES)


def fingerprint(method: str, path: str, body: dict[str, object], price: int) -> str:
    """What makes two requests 'the same request' for idempotency."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method}\n{path}\n{price}\n{canonical}".encode()).hexdigest()


async def existing(gw: Gateway, job: Job, fp: str) -> Job:
    """A retry of a known payment: same request → same job; different request → 409.

    The 409 does not name the job: a payment's fields become public on chain once settled,
    and only the holder of the original request body may learn the job id from a replay.
    """
    if job.fingerprint != fp:
        raise Conflict(
            "this payment (or idempotency key) already bought a different request",
            code="idempotency_conflict",
        )
    if job.state not in ANSWERED_STATES:
        async with core_transaction(gw.engine) as session:
            claimed = await JobRepository(session).try_lease(job.id, request_lease_s(gw.settings))
        if claimed:  # nobody is working on it (e.g. an unknown settlement): resume it here
            return await drive(gw, await load_job(gw.autocommit, job.id))
    return await answer_soon(gw, job.id)


async def spend_gate(gw: Gateway, body: dict[str, object], spent: int, paid: int) -> int:
    """Refuse to sell (before taking money) when the upstream costs too much or the cap is hit;
    the upstream's quote otherwise (reserved when the job is recorded).

    `spent`: the upstream spend of the last 24 h, read with the payment lookup; `paid`: what
    this payment is worth (the upstream option we would buy must not cost more).
    """
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
    if quote.amount > paid:
        raise ServiceUnavailable(
            UpstreamPriceAbovePaid(quote.amount, paid).message
            + "; nothing was charged, ask for the current price",
            code="upstream_price_above_paid",
        )
    if spent + quote.amount > s.daily_upstream_cap_atomic:
        raise admission.cap_reached()
    return quote.amount


async def _known(gw: Gateway, payment: IncomingPayment, scoped_key: str | None) -> Job | None:
    """The job this payment (or, failing that, this payer's key) already bought.

    Pass `scoped_key` only for a payment the facilitator verified: a key is the payer's.
    """
    async with gw.autocommit.connect() as session:
        repo = JobRepository(session)
        job = await repo.by_payment(payment.network, payment.payer, payment.nonce)
        if job is None and scoped_key:
            job = await repo.by_idempotency_key(scoped_key)
    return job


def _same_payment(job: Job, payment: IncomingPayment) -> Job:
    """The job, if `payment` authorizes the very transfer that bought it (same nonce, payer).

    The signature was recovered when the payment was parsed; the payer may still have signed
    another authorization with this nonce, which can never settle: refuse it.
    """
    if job.pay_nonce == payment.nonce and not same_authorization(
        payment.payload_dict()["payload"], job.payment_payload["payload"]
    ):
        raise PaymentRejected(
            "invalid_exact_evm_nonce_already_used",
            "this nonce already authorized a different transfer; sign a new payment",
        )
    return job


async def _verify(gw: Gateway, payment: IncomingPayment) -> None:
    try:
        verdict = await verify_payment(
            gw.facilitator, payment.payload, payment.requirements, gw.settings.facilitator_timeout_s
        )
    except FacilitatorUnavailable as exc:
        raise RetryLater(
            "the facilitator is unavailable; nothing was charged, retry with the same payment",
            code="facilitator_unavailable",
            retry_after_s=2,
        ) from exc
    if not verdict.is_valid:
        reason = verdict.invalid_reason or "invalid_payment"
        raise PaymentRejected(reason, verdict.invalid_message or reason)


async def purchase(
    gw: Gateway,
    *,
    route: str,
    body: dict[str, object],
    payment: IncomingPayment,
    idempotency_key: str | None,
    client: str | None = None,
) -> Job:
    """Turn a paid request into a job, exactly once per payment (and per idempotency key).

    `client`: the caller's address, for the per-client limit on new payments.
    """
    fp = fingerprint("POST", route, body, payment.value)
    # Keys are scoped to the payer: another payer's key must never find (or block) their job.
    scoped_key = f"{payment.payer}:{idempotency_key}" if idempotency_key else None
    identity = {"network": payment.network, "payer": payment.payer, "nonce": payment.nonce}
    start = spend.window_start(datetime.now(UTC))
    async with gw.autocommit.connect() as conn:
        # The spend is read now, for the spend gate after verifying.
        row = (await conn.execute(_KNOWN_AND_SPENT, {**identity, "start": start})).one()
        known = None
        if row.known is not None:  # a retry of a payment we have seen
            known = await JobRepository(conn).by_payment(**identity)
    if known is not None:
        return await existing(gw, _same_payment(known, payment), fp)
    spent = int(row.spent or 0)

    # Only what reaches the facilitator is counted: new payments, signed by their payer.
    per_payer, per_client = gw.settings.verify_rates
    await check_verify_rate(
        gw.limiter, per_payer=per_payer, per_client=per_client, payer=payment.payer, client=client
    )
    # A new payment must verify even when its key matches: that proves it comes from the payer.
    try:
        await _verify(gw, payment)
    except PaymentRejected:
        # A concurrent request with this payment may have recorded and settled it meanwhile
        # (the facilitator then says "nonce used"): the client paid, so it gets its job. By
        # the payment only: a refused payment proves nothing about the key's owner.
        known = await _known(gw, payment, None)
        if known is None:
            raise
        return await existing(gw, _same_payment(known, payment), fp)
    if scoped_key:
        async with core_transaction(gw.engine) as session:
            repo = JobRepository(session)
            # A key whose payment was refused bought nothing: free it for this new payment.
            await repo.release_failed_key(scoped_key)
            known = await repo.by_idempotency_key(scoped_key)
        if known is not None:
            return await existing(gw, known, fp)  # the new payment is never settled

    quote = await spend_gate(gw, body, spent, payment.value)
    settle_now = gw.settings.settlement_order is SettlementOrder.SETTLE_FIRST

    job = Job(
        id=new_job_id(),
        state=JobState.VERIFIED.value,
        route=route,
        request_body=body,
        fingerprint=fp,
        idempotency_key=scoped_key,
        x402_version=payment.version,
        payer=payment.payer,
        pay_network=payment.network,
        pay_asset=payment.asset,
        pay_amount=payment.value,
        pay_to=payment.pay_to,
        pay_nonce=payment.nonce,
        pay_valid_before=payment.valid_before,
        payment_payload=payment.payload_dict(),
        payment_requirements=payment.requirements_dict(),
        # Settling first, the row also counts the settle attempt that follows and takes its
        # lease: one write before the facilitator is called, not two.
        settle_attempts=1 if settle_now else 0,
        upstream_attempts=0,
        next_check_at=after(
            settle_lease_s(gw.settings) if settle_now else request_lease_s(gw.settings)
        ),
    )
    try:
        await admission.record(gw, job, quote)  # with its reservation, before any charge
    except IntegrityError:
        # A concurrent request (maybe on another replica) recorded this payment or key first.
        winner = await _known(gw, payment, scoped_key)
        if winner is None:
            raise
        return await existing(gw, _same_payment(winner, payment), fp)
    crash_point("after_verify")
    return await drive(gw, job, settle_counted=settle_now)


async def drive(gw: Gateway, job: Job, *, settle_counted: bool = False) -> Job:
    """Advance a job the current request owns until the client can be answered.

    `settle_counted`: the job was just recorded with its first settle attempt counted.
    """
    if job.paid_with_key:  # debited when recorded: nothing to settle, whatever the order
        return await guarded(gw, job.id, buy_upstream(gw, job))
    if gw.settings.settlement_order is SettlementOrder.SETTLE_AFTER:
        return await _upstream_then_settle(gw, job)
    if job.state == JobState.VERIFIED.value:
        settled = await settle_client_payment(
            gw, job, attempt_counted=settle_counted, then_sign=True
        )
        result, job = settled.result, settled.job
        if result.outcome is SettleOutcome.UNKNOWN:
            raise PaymentOutcomeUnknown(
                "settlement outcome is unknown; retry with the SAME payment "
                "(it will not be charged twice)",
                details={"reason": result.reason, "jobId": job.id},
            )
        if result.outcome is SettleOutcome.REFUSED:
            raise PaymentRejected(result.reason, result.message)
        crash_point("after_settle")
        if not settled.recorded:
            return await wait_until_answered(gw, job.id)  # another actor carries on with it
        if job.state == JobState.UPSTREAM_SIGNED.value:  # signed with the settlement
            crash_point("after_upstream_signed")
            return await guarded(gw, job.id, submit_upstream(gw, job, attempt_counted=True))
    # The client has paid from here on: whatever goes wrong ends in a job it can look up.
    return await guarded(gw, job.id, buy_upstream(gw, job))


async def _upstream_then_settle(gw: Gateway, job: Job) -> Job:
    """Operator opt-in: the client is charged only once the upstream accepted the job."""
    if job.state in (JobState.VERIFIED.value, JobState.UPSTREAM_SIGNED.value):
        job = await buy_upstream(gw, job, charge_first=False)
    if job.state != JobState.SUBMITTED.value or job.settle_tx is not None:
        return job
    settled = await settle_client_payment(gw, job)
    result, job = settled.result, settled.job
    if result.outcome is SettleOutcome.REFUSED:
        raise PaymentRejected(result.reason, result.message)
    if result.outcome is SettleOutcome.UNKNOWN:
        raise PaymentOutcomeUnknown(
            "settlement outcome is unknown; retry with the SAME payment",
            details={"reason": result.reason, "jobId": job.id},
        )
    return job
