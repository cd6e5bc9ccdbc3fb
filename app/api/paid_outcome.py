"""Where a paid request stands once `purchase` returns, for any transport (HTTP, MCP).

Outcome
 ├── Served    the job is accepted (or done): its view, and the receipt of its payment
 ├── Refused   the payment was refused: answer with the offer again (a 402)
 └── Failed    the upstream failed after payment: an error naming the job and its refund

`RetryLater` and `PaymentOutcomeUnknown` are raised: the client retries with the same payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from x402.schemas import SettleResponse

from app.context import Gateway
from app.core.errors import AppError, PaymentOutcomeUnknown, RetryLater, UpstreamFailed
from app.jobs.models import Job, JobState
from app.jobs.views import accepted_view, failure_sentence, job_view, money_outcome, refund_details
from app.payments.incoming import IncomingPayment

SETTLEMENT_UNRESOLVED = "settlement_unresolved"
UNRESOLVED_RETRY_AFTER_S = 300


@dataclass(frozen=True)
class Served:
    """Paid and accepted: the job's view and, for the payment that bought it, its receipt."""

    view: dict[str, Any]
    receipt: SettleResponse | None


@dataclass(frozen=True)
class Refused:
    """The payment did not settle: nothing was charged."""

    reason: str
    message: str | None


@dataclass(frozen=True)
class Failed:
    """The upstream failed after the payment settled."""

    error: AppError
    receipt: SettleResponse | None


Outcome = Served | Refused | Failed


def receipt(job: Job) -> SettleResponse | None:
    """The settlement receipt of the job's payment, once it settled."""
    if not job.settle_tx:
        return None
    return SettleResponse(
        success=True,
        transaction=job.settle_tx,
        # v1 names the network as the job's v1 requirements did (e.g. "base").
        network=str(job.payment_requirements.get("network", job.pay_network))
        if job.x402_version == 1
        else job.pay_network,
        payer=job.payer,
        amount=str(job.pay_amount),
    )


def upstream_failed(job: Job, base_url: str) -> UpstreamFailed:
    """The error for a paid job whose upstream failed: what happened, and to the money."""
    return UpstreamFailed(
        f"{failure_sentence(job)}; {money_outcome(job)}",
        code=job.error_code or "upstream_error",
        details={
            "jobId": job.id,
            "statusUrl": job_view(job, base_url)["statusUrl"],
            "reason": job.error_message,
            "refund": refund_details(job),
        },
    )


def outcome(gw: Gateway, job: Job, payment: IncomingPayment) -> Outcome:
    """Map where the job stands after the request path to a transport-neutral answer."""
    base = gw.settings.base_url
    # The receipt describes the job's payment: only the payment that bought the job gets it
    # (an idempotent retry with a new payment must not read it as its own).
    own = job.pay_nonce == payment.nonce and job.payer == payment.payer
    settled = receipt(job) if own else None
    if job.error_code == SETTLEMENT_UNRESOLVED and job.settle_tx is None:
        # The payment may well have moved: asking for another one could charge twice.
        raise RetryLater(
            "your payment's settlement could not be confirmed; it is under review by the "
            "operator, who will complete or refund it. Do not pay again: come back later "
            "with the same payment, or follow the job's status",
            code=SETTLEMENT_UNRESOLVED,
            retry_after_s=UNRESOLVED_RETRY_AFTER_S,
            details={"jobId": job.id, "statusUrl": job_view(job, base)["statusUrl"]},
        )
    if job.state == JobState.PAYMENT_FAILED.value or (
        job.state == JobState.NEEDS_ATTENTION.value and job.settle_tx is None
    ):
        return Refused(job.error_code or "settle_failed", job.error_message)
    if job.state == JobState.VERIFIED.value:
        raise PaymentOutcomeUnknown(
            "settlement outcome is unknown; retry with the SAME payment", details={"jobId": job.id}
        )
    if job.state in (
        JobState.FAILED.value,
        JobState.REFUNDING.value,
        JobState.REFUNDED.value,
        JobState.NEEDS_ATTENTION.value,
    ):
        return Failed(upstream_failed(job, base), settled)
    return Served(accepted_view(job, base), settled)
