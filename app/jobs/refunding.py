"""Failing a paid job: decide on a refund by policy, sign it once, settle it, record it."""

from __future__ import annotations

import time
from typing import Any

from app.context import Gateway
from app.core.crashpoints import crash_point
from app.core.db import core_transaction
from app.core.modes import RefundPolicy
from app.jobs import machine, onchain, refund_limit
from app.jobs.key_refund import refund_to_key
from app.jobs.models import Job, JobState
from app.jobs.policy import MAX_REFUND_ATTEMPTS, after, first_refund_check_s, refund_backoff_s
from app.jobs.refund_gate import CONDITIONAL, refund_after, refund_may_go
from app.jobs.repository import JobRepository, load_job, utcnow
from app.jobs.reservation import release_unspent
from app.jobs.transitions import transition
from app.jobs.upstream_charge import NOT_CHARGED, Charge, upstream_charge
from app.payments.chain import Transfer
from app.payments.facilitator import SettleOutcome, SettleResult, settle_payment
from app.payments.refunds import load_refund, refund_requirements, sign_refund

SETTLEMENT_UNRESOLVED = "settlement_unresolved"  # as `app.jobs.settlement` parks one
# States from which a job may be failed (in a fixed order: one statement shape).
FAILABLE = [s for s in JobState if s in machine.FAILABLE]


def _should_refund(policy: RefundPolicy, upstream_charged: bool | None) -> bool | None:
    """True/False, or None when the policy cannot decide without knowing the upstream charge."""
    if policy is RefundPolicy.OFF:
        return False
    if policy is RefundPolicy.FULL:
        return True
    # IF_UPSTREAM_NOT_CHARGED. An upstream that charged us and then refunded us would count
    # as not charged too, but no upstream refund is observable today (Dopamint sends none).
    return None if upstream_charged is None else not upstream_charged


async def fail_job(
    gw: Gateway, job_id: str, code: str, message: str, *, upstream_charged: bool | None
) -> Job:
    """Move a job to failed, refunding the client when policy says so."""
    job = await load_job(gw.autocommit, job_id)
    charge = NOT_CHARGED if upstream_charged is False else await upstream_charge(gw, job)
    upstream_charged, upstream_tx = charge.charged, charge.tx
    client_charged = job.client_charged  # settled, or debited from a key's budget
    policy = gw.settings.refund_policy
    decision = _should_refund(policy, upstream_charged) if client_charged else False
    # Unused but still executable: a refund that depends on it waits until it expired.
    deferred = client_charged and charge.charge is Charge.LIVE and policy in CONDITIONAL
    if deferred:
        decision = True
    if not client_charged and job.settle_attempts:
        # Settling after the upstream, an attempt whose outcome is unknown may have charged
        # the client: never closed as uncharged, the settlement goes to the operator.
        decision = None
        message = f"{message}; the client's settlement is unknown after {job.settle_attempts} "
        message += "attempt(s)"
        code = SETTLEMENT_UNRESOLVED
    async with core_transaction(gw.engine) as session:
        repo = JobRepository(session)
        # Guarded by upstream_tx IS NULL: two actors failing one job record the spend once.
        if (
            upstream_charged
            and upstream_tx
            and not job.upstream_tx
            and await transition(
                session,
                job_id,
                FAILABLE,
                event="upstream_spend_found",
                still_null=("upstream_tx",),
                upstream_tx=upstream_tx,
            )
        ):
            await repo.record_upstream(job, gw.settings.hot_wallet_address, upstream_tx)
        if (
            decision
            and not deferred
            and await refund_limit.withheld(session, gw, job, upstream_charged)
        ):
            decision = False
            code, message = refund_limit.CODE, f"no refund: {refund_limit.CODE}; {message}"
        common: dict[str, Any] = {"error_code": code, "error_message": message[:2000]}
        if decision is None:
            await transition(
                session,
                job_id,
                FAILABLE,
                event="fail_undecided",
                state=JobState.NEEDS_ATTENTION.value,
                finished_at=utcnow(),
                next_check_at=None,
                **common,
            )
        elif not decision:
            await transition(
                session,
                job_id,
                FAILABLE,
                event="failed_no_refund",
                state=JobState.FAILED.value,
                finished_at=utcnow(),
                next_check_at=None,
                **common,
            )
        elif job.paid_with_key and not deferred:  # credited to the key in this very write
            await refund_to_key(session, job, common)
        else:
            await transition(
                session,
                job_id,
                FAILABLE,
                event="refund_started",
                state=JobState.REFUNDING.value,
                refund_amount=job.pay_amount,
                next_check_at=refund_after(charge) if deferred else after(first_refund_check_s()),
                **common,
            )
        await release_unspent(session, job_id)
    if decision and not job.paid_with_key and not deferred:
        return await refund(gw, job_id, decided=True)
    return await load_job(gw.autocommit, job_id)


async def _refund_expired_unused(gw: Gateway, job: Job) -> bool:
    """True when the stored refund authorization expired and the chain shows it unused."""
    assert job.refund_payload is not None
    valid_before = int(job.refund_payload["payload"]["authorization"]["validBefore"])
    if valid_before > time.time() or gw.chain is None or job.refund_nonce is None:
        return False
    try:
        chain = onchain.paid_token(gw, job)
        used = await chain.authorization_used(gw.settings.hot_wallet_address, job.refund_nonce)
    except Exception as exc:  # kept as it is: it may still be executed
        onchain.unreadable(job, "the refund authorization", exc)
        return False
    return not used


async def _refund_tx(gw: Gateway, job: Job, result: SettleResult) -> tuple[str | None, str | None]:
    """(the transaction that refunded the client, a transaction that used the refund's
    authorization without refunding); the facilitator's word counts only as the chain confirms.
    """
    # Only a settled answer's transaction counts: an unknown one may carry a reverted tx.
    tx = result.tx if result.outcome is SettleOutcome.SETTLED else None
    if gw.chain is None:
        return tx, None
    # A refusal too is judged by the chain: it proves nothing about an earlier attempt whose
    # outcome was unknown, and which may have refunded the client.
    assert job.refund_amount is not None
    assert job.refund_nonce is not None
    expected = Transfer(gw.settings.hot_wallet_address, job.payer, job.refund_amount)
    try:
        remote = gw.settings.facilitator_url is not None
        chain = onchain.paid_token(gw, job)
        if tx is not None and (not remote or await chain.pays(tx, expected, job.refund_nonce)):
            return tx, None
        use = await onchain.refund_payment(gw, job)
    except Exception as exc:  # unknown: retried, or parked without a chain
        onchain.unreadable(job, "the refund", exc)
        return None, None
    if use.tx is not None and not use.paid:
        return None, use.tx
    return (use.tx if use.paid else None), None


async def refund(gw: Gateway, job_id: str, *, decided: bool = False) -> Job:
    """Sign (once) and settle the refund of a REFUNDING job; `decided`: the caller just saw
    our upstream authorization unable to charge us (else `refund_gate` asks the chain)."""
    job = await load_job(gw.autocommit, job_id)
    if job.state != JobState.REFUNDING.value or job.refund_amount is None:
        return job
    if not decided and (stopped := await refund_may_go(gw, job)) is not None:
        return stopped
    if job.paid_with_key:  # never an on-chain transfer: the key's budget is credited
        async with core_transaction(gw.engine) as session:
            await refund_to_key(session, job, {})
        return await load_job(gw.autocommit, job_id)
    if job.refund_payload is not None and await _refund_expired_unused(gw, job):
        # Nobody can execute it any more: replacing it cannot pay the client twice.
        async with core_transaction(gw.engine) as session:
            await transition(
                session,
                job_id,
                [JobState.REFUNDING],
                event="refund_expired_unused",
                refund_payload=None,
                refund_nonce=None,
            )
        job = await load_job(gw.autocommit, job_id)
    if job.refund_payload is None:
        requirements = refund_requirements(
            payer=job.payer,
            amount=job.pay_amount,
            network=job.pay_network,
            asset=job.pay_asset,
            extra=job.payment_requirements.get("extra"),
        )
        signed = await sign_refund(gw.hot_wallet, requirements)
        nonce = str(signed["payload"]["authorization"]["nonce"]).lower()
        async with core_transaction(gw.engine) as session:
            await transition(
                session,
                job_id,
                [JobState.REFUNDING],
                event="refund_signed",
                refund_payload=signed,
                refund_nonce=nonce,
            )
        crash_point("after_refund_signed")
        job = await load_job(gw.autocommit, job_id)
    assert job.refund_payload is not None
    assert job.refund_nonce is not None
    payload, requirements = load_refund(job.refund_payload)
    result = await settle_payment(
        gw.facilitator, payload, requirements, gw.settings.facilitator_timeout_s, step="refund"
    )
    tx, unpaid = await _refund_tx(gw, job, result)
    attempts = job.refund_attempts + 1  # this one
    async with core_transaction(gw.engine) as session:
        if tx is not None:
            if await transition(
                session,
                job_id,
                [JobState.REFUNDING],
                event="refunded",
                state=JobState.REFUNDED.value,
                refund_tx=tx,
                finished_at=utcnow(),
                next_check_at=None,
            ):
                await JobRepository(session).record_refund(job, gw.settings.hot_wallet_address, tx)
        elif unpaid is not None:
            await transition(
                session,
                job_id,
                [JobState.REFUNDING],
                event="refund_not_made",
                state=JobState.NEEDS_ATTENTION.value,
                error_code="refund_not_made",
                error_message=f"the refund authorization was used by transaction {unpaid}, "
                "a transfer that did not pay the client back",
                finished_at=utcnow(),
                next_check_at=None,
            )
        elif result.outcome is SettleOutcome.REFUSED:
            await transition(
                session,
                job_id,
                [JobState.REFUNDING],
                event="refund_refused",
                state=JobState.NEEDS_ATTENTION.value,
                error_code="refund_refused",
                error_message=f"refund refused by facilitator: {result.reason}",
                finished_at=utcnow(),
                next_check_at=None,
            )
        elif gw.chain is None and attempts >= MAX_REFUND_ATTEMPTS:
            # Nothing can tell whether it went through: the operator checks the hot wallet.
            await transition(
                session,
                job_id,
                [JobState.REFUNDING],
                event="refund_unresolved",
                state=JobState.NEEDS_ATTENTION.value,
                refund_attempts=attempts,
                error_code="refund_unresolved",
                error_message=f"refund outcome still unknown ({result.reason}) after "
                f"{attempts} attempts; its authorization nonce is {job.refund_nonce}",
                finished_at=utcnow(),
                next_check_at=None,
            )
        else:
            await transition(
                session,
                job_id,
                [JobState.REFUNDING],
                event="refund_unknown_retry",
                refund_attempts=attempts,
                next_check_at=after(refund_backoff_s(attempts)),
            )
    return await load_job(gw.autocommit, job_id)
