"""Background work: advance due jobs (poll, resume after a crash, retry, refund).

Rows are claimed with `SELECT … FOR UPDATE SKIP LOCKED` and leased by pushing
`next_check_at` forward in the same short transaction, so replicas never share a job.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from app.context import Gateway
from app.core.db import transaction
from app.core.settings import SettlementOrder
from app.jobs.models import JobState
from app.jobs.polling import Poller
from app.jobs.refunding import fail_job, refund
from app.jobs.repository import JobRepository, load_job, utcnow
from app.jobs.steps import buy_upstream, settle_client_payment, submit_upstream
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


async def claim(gw: Gateway, limit: int = BATCH) -> list[str]:
    """Lease up to `limit` due jobs to this process."""
    async with transaction(gw.sessions) as session:
        jobs = await JobRepository(session).claim_due(ACTIVE, limit)
        lease = utcnow() + timedelta(seconds=LEASE_S)
        for job in jobs:
            job.next_check_at = lease
        return [job.id for job in jobs]


async def advance(gw: Gateway, poller: Poller, job_id: str) -> None:
    """One step forward for one job, whatever state it was left in."""
    job = await load_job(gw.sessions, job_id)
    state = JobState(job.state)
    after = gw.settings.settlement_order is SettlementOrder.SETTLE_AFTER
    if state is JobState.VERIFIED:
        if after:
            await fail_job(
                gw,
                job_id,
                "abandoned",
                "request ended before the upstream was bought",
                upstream_charged=False,
            )
            return
        result = await settle_client_payment(gw, job_id)
        if result.outcome is SettleOutcome.SETTLED:
            await buy_upstream(gw, job_id)
    elif state is JobState.PAID:
        await buy_upstream(gw, job_id)
    elif state is JobState.UPSTREAM_SIGNED:
        await submit_upstream(gw, job_id)
    elif state is JobState.SUBMITTED:
        if after and job.settle_tx is None:
            await settle_client_payment(gw, job_id)
        await poller.refresh(job_id)
    elif state is JobState.REFUNDING:
        await refund(gw, job_id)


async def run_once(gw: Gateway, poller: Poller) -> int:
    """Claim and advance one batch; returns how many jobs were handled."""
    ids = await claim(gw)
    await asyncio.gather(*(_safe_advance(gw, poller, job_id) for job_id in ids))
    return len(ids)


async def _safe_advance(gw: Gateway, poller: Poller, job_id: str) -> None:
    try:
        await advance(gw, poller, job_id)
    except Exception:
        log.exception("advancing job %s failed; it will be retried after its lease", job_id)


async def run_forever(gw: Gateway, poller: Poller, stop: asyncio.Event) -> None:
    """The worker loop of one process."""
    while not stop.is_set():
        try:
            handled = await run_once(gw, poller)
        except Exception:
            log.exception("worker batch failed")
            handled = 0
        if handled < BATCH:
            try:
                await asyncio.wait_for(stop.wait(), gw.settings.worker_interval_s)
            except TimeoutError:
                pass
