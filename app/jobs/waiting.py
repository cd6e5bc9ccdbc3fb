"""Waiting for a job another request (or replica) is working on, for a few seconds at most."""

from __future__ import annotations

import asyncio
from datetime import datetime

from app.context import Gateway
from app.core.errors import RetryLater
from app.jobs.models import ANSWERED_STATES, Job
from app.jobs.repository import JobRepository, utcnow

# A retry of a known payment waits this long for the actor working on its job, then is told
# when to come back: an actor that died holds its lease for up to a minute or more.
ANSWER_WITHIN_S = 5.0
MAX_RETRY_AFTER_S = 30


async def wait_until_answered(gw: Gateway, job_id: str, within_s: float | None = None) -> Job:
    """Wait while another request (or replica) is still processing this job.

    `within_s`: how long at most (default: as long as that request may take).
    """
    s = gw.settings
    if within_s is None:
        within_s = s.facilitator_timeout_s + s.upstream_timeout_s
    deadline = asyncio.get_running_loop().time() + within_s
    delay = 0.05
    while True:
        async with gw.autocommit.connect() as session:
            job = await JobRepository(session).get(job_id)
        assert job is not None
        # error_code on an unfinished job: its last attempt failed and a retry is scheduled.
        if job.state in ANSWERED_STATES or job.error_code is not None:
            return job
        if asyncio.get_running_loop().time() > deadline:
            return job
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def answer_soon(gw: Gateway, job_id: str) -> Job:
    """The job once answerable, or a 503 telling the client when to retry the same payment."""
    job = await wait_until_answered(gw, job_id, ANSWER_WITHIN_S)
    if job.state in ANSWERED_STATES or job.error_code is not None:
        return job
    raise RetryLater(
        "an earlier request with this payment is still being processed (or died while it "
        "was); nothing more will be charged: retry with the SAME payment after Retry-After",
        code="payment_in_progress",
        retry_after_s=_retry_after(job.next_check_at),
        details={"jobId": job.id, "state": job.state},
    )


def _retry_after(lease_until: datetime | None) -> int:
    """Seconds until the lease of whoever works on the job runs out (then it is resumed)."""
    if lease_until is None:
        return 1
    if lease_until.tzinfo is None:  # SQLite gives naive UTC
        lease_until = lease_until.replace(tzinfo=utcnow().tzinfo)
    remaining = (lease_until - utcnow()).total_seconds()
    return max(1, min(MAX_RETRY_AFTER_S, int(remaining) + 1))
