"""Background work: advance due jobs (poll, resume after a crash, retry, refund).

Rows are claimed with `SELECT … FOR UPDATE SKIP LOCKED` and leased by pushing
`next_check_at` forward in the same short transaction, so replicas never share a job.
"""

from __future__ import annotations

import asyncio
import logging

from app.context import Gateway
from app.core.modes import SettlementOrder
from app.jobs.models import Job, JobState
from app.jobs.polling import Poller, fail_recorded, failed_upstream
from app.jobs.purchase_errors import guarded
from app.jobs.refunding import fail_job, refund
from app.jobs.repository import JobRepository
from app.jobs.settlement import settle_client_payment
from app.jobs.steps import buy_upstream, submit_upstream
from app.payments.facilitator import SettleOutcome

log = logging.getLogger(__name__)

ACTIVE = [
    JobState.VERIFIED,
    JobState.PAID,
    JobState.UPSTREAM_SIGNED,
    JobState.SUBMITTED,
    JobState.REFUNDING,
]
LEASE_S = 120
BATCH = 50


async def claim(gw: Gateway, limit: int = BATCH) -> list[Job]:
    """Lease up to `limit` due jobs to this process; the jobs as claimed."""
    async with gw.autocommit.connect() as conn:  # one statement: atomic by itself
        return await JobRepository(conn).claim_due(ACTIVE, limit, LEASE_S)


async def advance(gw: Gateway, poller: Poller, job: Job) -> None:
    """One step forward for one job (as claimed), whatever state it was left in."""
    state = JobState(job.state)
    after = gw.settings.settlement_order is SettlementOrder.SETTLE_AFTER
    if state is JobState.VERIFIED and job.paid_with_key:
        # Never committed (the debit records it PAID), unless written by hand: never settled.
        log.error("key-paid job %s is in state verified; left for the operator", job.id)
        return
    if state is JobState.VERIFIED:
        if after:
            await fail_job(
                gw,
                job.id,
                "abandoned",
                "request ended before the upstream was bought",
                upstream_charged=False,
            )
            return
        settled = await settle_client_payment(gw, job)
        if settled.result.outcome is SettleOutcome.SETTLED and settled.recorded:
            await guarded(gw, job.id, buy_upstream(gw, settled.job))
    elif state is JobState.PAID:
        await guarded(gw, job.id, buy_upstream(gw, job))
    elif state is JobState.UPSTREAM_SIGNED:
        await guarded(gw, job.id, submit_upstream(gw, job))
    elif state is JobState.SUBMITTED:
        if failed_upstream(job):  # a status read recorded it: no charge for a failed job
            await fail_recorded(gw, job)
            return
        if after and not job.client_charged:  # a key-paid job has nothing to settle
            await settle_client_payment(gw, job)
        await poller.refresh(job.id)
    elif state is JobState.REFUNDING:
        await refund(gw, job.id)


async def run_once(gw: Gateway, poller: Poller) -> int:
    """Claim and advance one batch; returns how many jobs were handled.

    At most half of `db_pool_size` jobs advance at once: the worker alone never fills the
    pool, so requests (and status reads polling a job) find a pooled connection instead of
    opening an overflow one, which is closed after each use. Measured with 1,000 jobs in
    progress: with the whole pool to the worker, the overflow connections' churn (a TLS
    handshake each) slowed the process so much that it accepted ~100 connections a second.
    """
    jobs = await claim(gw)
    limit = asyncio.Semaphore(max(1, gw.settings.db_pool_size // 2))

    async def bounded(job: Job) -> None:
        async with limit:
            await _safe_advance(gw, poller, job)

    await asyncio.gather(*(bounded(job) for job in jobs))
    return len(jobs)


async def _safe_advance(gw: Gateway, poller: Poller, job: Job) -> None:
    try:
        await advance(gw, poller, job)
    except Exception:
        log.exception("advancing job %s failed; it will be retried after its lease", job.id)


MAX_BACKOFF_S = 30.0


async def run_forever(gw: Gateway, poller: Poller, stop: asyncio.Event) -> None:
    """The worker loop of one process.

    A failed batch (typically the database being unreachable) is one log line, and the next
    try waits twice as long each time (up to 30 s), not a traceback every interval.
    """
    failures = 0
    while not stop.is_set():
        pause = gw.settings.worker_interval_s
        try:
            handled = await run_once(gw, poller)
            if failures:
                log.warning("worker batches succeed again after %d failure(s)", failures)
            failures = 0
        except Exception as exc:
            failures += 1
            handled = 0
            pause = min(pause * 2**failures, MAX_BACKOFF_S)
            reason = (str(exc).splitlines() or [""])[0][:200]
            log.warning(
                "worker batch failed (%s: %s); retrying in %.1f s",
                type(exc).__name__,
                reason,
                pause,
            )
        if handled < BATCH:
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass
