"""Unexpected errors while buying from the upstream after the client paid: logged with the
job id, and the job failed (refund by policy) instead of retried forever or left paid."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from sqlalchemy.exc import SQLAlchemyError

from app.context import Gateway
from app.jobs.models import Job
from app.jobs.refunding import fail_job
from app.upstream.errors import UpstreamError

log = logging.getLogger(__name__)

CODE = "upstream_purchase_error"


def unexpected_purchase_error(job_id: str, exc: Exception) -> UpstreamError:
    """Log a purchase error nobody foresaw (with its traceback) as the job's failure."""
    log.error("buying the upstream job for %s failed unexpectedly", job_id, exc_info=exc)
    return UpstreamError(
        CODE, f"unexpected error while buying from the upstream: {type(exc).__name__}"
    )


def _transient(exc: Exception) -> bool:
    """Our own database or network, not the purchase: the job is resumed later as it is."""
    return isinstance(exc, SQLAlchemyError | OSError)


async def guarded(gw: Gateway, job_id: str, step: Awaitable[Job]) -> Job:
    """Run a purchase step of a PAID (or later) job; an unexpected error fails the job."""
    try:
        return await step
    except Exception as exc:
        if _transient(exc):
            raise
        failure = unexpected_purchase_error(job_id, exc)
        return await fail_job(gw, job_id, failure.code, failure.message, upstream_charged=None)
