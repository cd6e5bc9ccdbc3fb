"""How a job looks to the client: the upstream's vocabulary plus payment and refund facts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.core.networks import network_for_version
from app.jobs.models import Job, JobState
from app.payments.pricing import format_usdc

_PUBLIC_STATUS = {
    JobState.COMPLETED.value: "completed",
    JobState.FAILED.value: "failed",
    JobState.PAYMENT_FAILED.value: "failed",
    JobState.REFUNDING.value: "failed",
    JobState.REFUNDED.value: "failed",
    # Parked for the operator: nothing more will happen on its own.
    JobState.NEEDS_ATTENTION.value: "failed",
}


def public_status(job: Job) -> str:
    """processing | completed | failed, as the upstream says it."""
    return _PUBLIC_STATUS.get(job.state, "processing")


JOBS_PREFIX = "/v1/jobs/"  # + a job id: where a client reads its job


def status_url(base_url: str, job_id: str) -> str:
    """Our own status URL for a job."""
    return f"{base_url}{JOBS_PREFIX}{job_id}"


def accepted_view(job: Job, base_url: str) -> dict[str, Any]:
    """The answer to a paid submission: the upstream's shape, pointing at our status URL."""
    return {
        "jobId": job.id,
        "status": public_status(job),
        "requestId": job.upstream_request_id or job.id,
        "statusUrl": status_url(base_url, job.id),
    }


def job_view(job: Job, base_url: str) -> dict[str, Any]:
    """Everything a client may know about its job."""
    out = accepted_view(job, base_url)
    out["state"] = job.state
    result = job.result or {}
    if job.state == JobState.COMPLETED.value:
        out["images"] = result.get("images", [])
        out["description"] = result.get("description")
    if job.error_code:
        out["error"] = {"code": job.error_code, "message": job.error_message}
    out["payment"] = payment_view(job)
    refund = refund_view(job)
    if refund is not None:
        out["refund"] = refund
    out["createdAt"] = rfc3339(job.created_at)
    out["finishedAt"] = rfc3339(job.finished_at)
    return out


def payment_view(job: Job) -> dict[str, Any]:
    """How the job was paid: an x402 payment (payer, settlement) or an API key's budget."""
    if job.paid_with_key:  # the key's id only: never anything that could use it
        return {
            "method": "api_key",
            "apiKeyId": job.api_key_id,
            "payer": None,
            "amount": str(job.pay_amount),
            "amountDisplay": format_usdc(job.pay_amount),
            "asset": job.pay_asset,
            "network": None,
            "transaction": None,
        }
    return {
        "method": "x402",
        "payer": job.payer,
        "amount": str(job.pay_amount),
        "amountDisplay": format_usdc(job.pay_amount),
        "asset": job.pay_asset,
        # Named as in the client's receipt: v1 names (`base`) for x402 v1, CAIP-2 for v2.
        "network": network_for_version(job.pay_network, job.x402_version),
        "transaction": job.settle_tx,
    }


def rfc3339(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC, `Z`-suffixed (SQLite hands timestamps back without an offset)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def refund_view(job: Job) -> dict[str, Any] | None:
    """Where the client's refund stands: refunded (with its tx), pending (and when it is
    tried next), or under review by the operator; None when no refund is owed."""
    if job.refund_amount is None:
        return None
    out: dict[str, Any] = {"amount": str(job.refund_amount), "transaction": job.refund_tx}
    if job.paid_with_key and job.state == JobState.REFUNDED.value:
        out["status"] = "refunded"
        out["to"] = "api_key_budget"  # credited to the key: no transaction
    elif job.refund_tx:
        out["status"] = "refunded"
    elif job.state == JobState.NEEDS_ATTENTION.value:
        out["status"] = "under_review"  # nothing more happens on its own
    else:
        out["status"] = "pending"
        if job.state == JobState.REFUNDING.value and job.next_check_at is not None:
            out["nextAttemptAt"] = rfc3339(job.next_check_at)
    return out


def money_outcome(job: Job) -> str:
    """One sentence on what happened to the client's payment of a job that failed."""
    if job.paid_with_key:
        return _key_money_outcome(job)
    paid = f"your payment of {format_usdc(job.pay_amount)} USDC"
    if job.settle_tx is None:
        return f"{paid} was not charged"
    refund = refund_view(job)
    if refund is None and job.state == JobState.NEEDS_ATTENTION.value:
        return f"{paid} was charged; whether it is refunded is under review by the operator"
    if refund is None:
        return f"{paid} was charged and is not refunded (the operator's refund policy)"
    if refund["status"] == "refunded":
        return f"{paid} was refunded in {job.refund_tx}"
    if refund["status"] == "pending":
        when = refund.get("nextAttemptAt")
        if job.refund_awaits_upstream_charge:
            return (
                f"{paid} is to be refunded unless the upstream still collects the payment we "
                "signed for it; decided once that payment expires"
                + (f" (at {when})" if when else "")
            )
        return f"{paid} is being refunded" + (f" (next attempt at {when})" if when else "")
    return f"{paid} is to be refunded; the refund is under review by the operator"


def _key_money_outcome(job: Job) -> str:
    debit = f"the {format_usdc(job.pay_amount)} USDC debited from your API key's budget"
    if job.state == JobState.REFUNDED.value:
        return f"{debit} was credited back to it"
    if job.state == JobState.NEEDS_ATTENTION.value:
        return f"whether {debit} is credited back is under review by the operator"
    return f"{debit} is not credited back (the operator's refund policy)"


def refund_details(job: Job) -> dict[str, Any] | None:
    """The refund in an error answer: {status, amount, tx} (and nextAttemptAt when pending)."""
    refund = refund_view(job)
    if refund is None:
        return None
    out = {"status": refund["status"], "amount": refund["amount"], "tx": job.refund_tx}
    if "nextAttemptAt" in refund:
        out["nextAttemptAt"] = refund["nextAttemptAt"]
    return out


def failure_sentence(job: Job) -> str:
    """What went wrong, worded so that it is not mistaken for the client's payment failing."""
    if job.error_code == "upstream_payment_refused":
        reason = (job.error_message or "").removeprefix("upstream refused payment: ")
        return f"the upstream refused our payment to it ({reason}), so it did not run this request"
    return f"the upstream could not serve this paid request: {job.error_message}"
