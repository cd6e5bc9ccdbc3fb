"""What the chain says about a job's three authorizations: the client's, the upstream's, ours.

Each is judged by its transfer, never by its nonce alone (see `app.payments.chain`): the
expected Transfer and the window in which the authorization can have been used come from
the job row.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC

from x402.schemas import SettleResponse

from app.context import Gateway
from app.jobs.models import Job
from app.payments.chain import AuthorizationUse, ChainReader, Transfer, Window
from app.payments.facilitator import SettleOutcome, SettleResult

log = logging.getLogger(__name__)

# Every authorization of a job is signed (the client's: verified) at most this long before
# the job row is written; the margin also covers clock skew between the database and chain.
LOOKBACK_S = 600
EXPIRY_MARGIN_S = 60  # wall clock vs block time


def created(job: Job) -> int:
    """When the job row was written, in unix seconds."""
    created = job.created_at
    if created.tzinfo is None:  # SQLite stores UTC without a zone
        created = created.replace(tzinfo=UTC)
    return int(created.timestamp())


def _window(job: Job, valid_after: int, valid_before: int) -> Window:
    # The contract refuses the authorization outside (validAfter, validBefore).
    return Window(start=max(valid_after, created(job) - LOOKBACK_S), end=valid_before)


def _authorization(payload: dict[str, object]) -> dict[str, str]:
    inner = payload.get("payload")
    assert isinstance(inner, dict)
    authorization = inner["authorization"]
    assert isinstance(authorization, dict)
    return authorization


def unreadable(job: Job, what: str, exc: Exception) -> None:
    """Say which chain read failed for which job, and why; the caller then treats the answer
    as unknown (retried, or parked for the operator), never as a no."""
    reason = (str(exc).splitlines() or [""])[0][:300]
    log.warning(
        "could not read %s of job %s from the chain: %s: %s",
        what,
        job.id,
        type(exc).__name__,
        reason,
    )


def paid_token(gw: Gateway, job: Job) -> ChainReader:
    """The reader of the token the client paid in, on its network (refunds use it too)."""
    assert gw.chain is not None
    return gw.chain.at(job.pay_network, job.pay_asset)


async def client_payment(gw: Gateway, job: Job) -> AuthorizationUse:
    """The client's authorization: paid only by a Transfer payer → our pay-to of the price."""
    auth = _authorization(job.payment_payload)
    window = _window(job, int(auth.get("validAfter", 0)), job.pay_valid_before)
    expected = Transfer(job.payer, job.pay_to, job.pay_amount)
    chain = paid_token(gw, job)
    return await chain.authorization_outcome(job.payer, job.pay_nonce, window, expected)


async def upstream_payment(gw: Gateway, job: Job) -> AuthorizationUse:
    """Our upstream authorization: paid only by a Transfer hot wallet → upstream pay-to."""
    assert gw.chain is not None
    assert job.upstream_nonce is not None
    assert job.upstream_pay_to is not None
    assert job.upstream_amount is not None
    hot = gw.settings.hot_wallet_address
    valid_before = job.upstream_valid_before or job.pay_valid_before
    window = _window(job, 0, valid_before)
    expected = Transfer(hot, job.upstream_pay_to, job.upstream_amount)
    return await gw.chain.authorization_outcome(hot, job.upstream_nonce, window, expected)


async def refund_payment(gw: Gateway, job: Job) -> AuthorizationUse:
    """Our refund authorization: made only by a Transfer hot wallet → payer of the refund."""
    assert job.refund_payload is not None
    assert job.refund_nonce is not None
    assert job.refund_amount is not None
    auth = _authorization(job.refund_payload)
    window = _window(job, int(auth["validAfter"]), int(auth["validBefore"]))
    hot = gw.settings.hot_wallet_address
    expected = Transfer(hot, job.payer, job.refund_amount)
    chain = paid_token(gw, job)  # refunds are made in the token paid
    return await chain.authorization_outcome(hot, job.refund_nonce, window, expected)


async def reconcile_settlement(gw: Gateway, job: Job, result: SettleResult) -> SettleResult:
    """Ask the chain whether an unknown settlement actually happened.

    SETTLED when the authorization was used by a transaction that paid us exactly; REFUSED when
    it was used by one that did not (the payer spent its nonce elsewhere), or expired unused
    (nobody can ever execute it now); otherwise `result` unchanged.
    """
    assert gw.chain is not None
    try:
        use = await client_payment(gw, job)
    except Exception as exc:
        unreadable(job, "the client's payment", exc)
        return result
    if not use.used:
        if time.time() > job.pay_valid_before + EXPIRY_MARGIN_S:
            return SettleResult(
                SettleOutcome.REFUSED,
                None,
                "authorization_expired_unused",
                "the payment authorization expired without being settled; nothing was charged",
            )
        return result
    if use.tx is None:
        return result
    if not use.paid:
        return SettleResult(
            SettleOutcome.REFUSED,
            None,
            "payment_not_received",
            f"the payment authorization was used by transaction {use.tx}, a transfer that did "
            f"not pay {job.pay_amount} to {job.pay_to}; nothing was charged",
        )
    response = SettleResponse(success=True, transaction=use.tx, network=job.pay_network)
    return SettleResult(SettleOutcome.SETTLED, response, "", "")


async def confirm_settlement(gw: Gateway, job: Job, result: SettleResult) -> SettleResult:
    """A settle answer as the chain confirms it.

    A remote facilitator's success is a claim: with a chain to ask, its transaction must carry
    our Transfer, or the chain decides as for an unknown outcome. (The embedded facilitator
    checks the receipt's Transfer itself.)
    """
    if gw.chain is None:
        return result
    if result.outcome is SettleOutcome.SETTLED and gw.settings.facilitator_url is not None:
        assert result.tx is not None
        expected = Transfer(job.payer, job.pay_to, job.pay_amount)
        try:
            if await paid_token(gw, job).pays(result.tx, expected, job.pay_nonce):
                return result
        except Exception as exc:  # judged as an unknown outcome below
            unreadable(job, f"the settlement transaction {result.tx}", exc)
        result = SettleResult(
            SettleOutcome.UNKNOWN,
            None,
            "settlement_unconfirmed",
            f"the facilitator reported transaction {result.tx}, which the chain does not show "
            "paying us (yet)",
        )
    if result.outcome is SettleOutcome.REFUSED and job.settle_attempts > 1:
        return await _judge_refusal(gw, job, result)
    if result.outcome is SettleOutcome.UNKNOWN:
        return await reconcile_settlement(gw, job, result)
    return result


async def _judge_refusal(gw: Gateway, job: Job, refusal: SettleResult) -> SettleResult:
    """A refusal after an attempt whose outcome was unknown: it says nothing about that
    attempt, which may have charged the client (a retry after the authorization expired is
    refused whatever happened before). It stands only if the chain shows the authorization
    unused; used, the chain decides; unreadable, the outcome stays unknown."""
    assert gw.chain is not None
    unknown = SettleResult(SettleOutcome.UNKNOWN, None, refusal.reason, refusal.message)
    try:
        use = await client_payment(gw, job)
    except Exception as exc:
        unreadable(job, "the client's payment", exc)
        return unknown
    if not use.used:
        return refusal
    return await reconcile_settlement(gw, job, unknown)
