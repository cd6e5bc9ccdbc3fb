"""How a job looks to the client: the upstream's vocabulary plus payment and refund facts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.jobs.models import Job, JobState
from app.payments.networks import network_for_version
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


def status_url(base_url: str, job_id: str) -> str:
    """Our own status URL for a job."""
    return f"{base_url}/v1/jobs/{job_id}"


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
    out["payment"] = {
        "payer": job.payer,
        "amount": str(job.pay_amount),
        "amountDisplay": format_usdc(job.pay_amount),
        "asset": job.pay_asset,
        # Named as in the client's receipt: v1 names (`base`) for x402 v1, CAIP-2 for v2.
        "network": network_for_version(job.pay_network, job.x402_version),
        "transaction": job.settle_tx,
    }
    if job.refund_amount is not None:
        out["refund"] = {
            "amount": str(job.refund_amount),
            "transaction": job.refund_tx,
            "status": "refunded" if job.refund_tx else "pending",
        }
    out["createdAt"] = rfc3339(job.created_at)
    out["finishedAt"] = rfc3339(job.finished_at)
    return out


def rfc3339(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with its offset (SQLite hands timestamps back without one)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
