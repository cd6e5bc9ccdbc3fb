"""Upstream status polling, coalesced: at most one upstream request per job per interval.

Within a process, concurrent readers share one in-flight refresh; across replicas, a
conditional UPDATE on `last_polled_at` lets exactly one of them poll in each interval.
A status read polls with `may_move_money=False`: it records what the upstream said and
hands every outcome that fails (and so may refund) a job to the worker, due at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

from app.context import Gateway
from app.core.db import core_transaction
from app.jobs.models import Job, JobState
from app.jobs.policy import after
from app.jobs.refunding import fail_job
from app.jobs.repository import JobRepository, utcnow
from app.jobs.transitions import transition
from app.upstream.errors import UpstreamError, UpstreamMalformed, UpstreamRejected

# Unreadable status answers in a row (malformed, too large, a redirect) that end a job.
MAX_BAD_STATUS_READS = 5


def too_old(job: Job, max_age_s: float) -> bool:
    """Whether the job was created more than `max_age_s` ago."""
    created = job.created_at
    if created.tzinfo is None:  # SQLite hands back naive UTC
        created = created.replace(tzinfo=UTC)
    return utcnow() - created > timedelta(seconds=max_age_s)


async def count_bad_read(gw: Gateway, job: Job, exc: UpstreamMalformed) -> None:
    """One more unreadable answer: the job fails after MAX_BAD_STATUS_READS in a row."""
    count = job.bad_status_reads + 1
    if count >= MAX_BAD_STATUS_READS:
        message = f"{count} unreadable status answers in a row; last: {exc.message}"
        await fail_job(gw, job.id, exc.code, message, upstream_charged=True)
        return
    async with core_transaction(gw.engine) as session:
        await transition(
            session,
            job.id,
            [JobState.SUBMITTED],
            event="status_unreadable",
            bad_status_reads=count,
            next_check_at=after(gw.settings.poll_interval_s),
        )


def _result_of(data: dict[str, Any]) -> dict[str, Any]:
    """What we keep of an upstream status document (everything but transport noise)."""
    return {k: v for k, v in data.items() if k not in ("statusUrl",)}


def failed_upstream(job: Job) -> bool:
    """Whether a poll recorded the upstream's terminal "failed" answer for this job."""
    return job.result is not None and job.result.get("status") == "failed"


async def fail_recorded(gw: Gateway, job: Job) -> None:
    """Fail (and so refund, by policy) a job whose upstream failure was recorded."""
    assert job.result is not None
    await _fail_upstream_job(gw, job.id, job.result)


async def _fail_upstream_job(gw: Gateway, job_id: str, answer: dict[str, Any]) -> None:
    """Fail a job whose upstream answered "failed"; the upstream was paid."""
    message = str(answer.get("error") or "the upstream job failed")
    await fail_job(gw, job_id, "upstream_job_failed", message, upstream_charged=True)


async def hand_to_worker(gw: Gateway, job: Job) -> None:
    """Make the job due now and give up this poll's claim, so a worker polls and acts on it."""
    async with core_transaction(gw.engine) as session:
        await transition(
            session,
            job.id,
            [JobState.SUBMITTED],
            event="handed_to_worker",
            last_polled_at=None,
            next_check_at=utcnow(),
        )


class Poller:
    """Single-flight upstream refreshes for one process."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._inflight: dict[tuple[str, bool], asyncio.Task[None]] = {}
        # Told the id of each job the worker has just polled (long polls re-read it).
        self.listeners: list[Callable[[str], None]] = []

    async def refresh(self, job_id: str, *, may_move_money: bool = True) -> None:
        """Poll the upstream for `job_id` unless someone polled it within the interval.

        With `may_move_money=False` (a status read) no outcome fails the job: a worker does.
        """
        key = (job_id, may_move_money)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._refresh(job_id, may_move_money))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._done(key))
        await asyncio.shield(task)

    def _done(self, key: tuple[str, bool]) -> None:
        self._inflight.pop(key, None)
        job_id, may_move_money = key
        if may_move_money:  # a status read's own refresh is followed by its own re-read
            for listener in self.listeners:
                listener(job_id)

    async def _refresh(self, job_id: str, may_move_money: bool) -> None:
        gw = self._gw
        async with core_transaction(gw.engine) as session:
            job = await JobRepository(session).claim_poll(job_id, gw.settings.poll_interval_s)
        if job is None:
            return
        assert job.upstream_status_url is not None
        if not may_move_money and (failed_upstream(job) or too_old(job, gw.settings.max_job_age_s)):
            await hand_to_worker(gw, job)
            return
        if failed_upstream(job):
            await fail_recorded(gw, job)
            return
        if too_old(job, gw.settings.max_job_age_s):
            message = f"the upstream job did not finish within {gw.settings.max_job_age_s:g} s"
            await fail_job(gw, job.id, "upstream_job_expired", message, upstream_charged=True)
            return
        try:
            data = await gw.upstream.status(job.upstream_status_url)
        except UpstreamRejected as exc:  # lost, or a URL we do not read: it will not change
            if may_move_money:
                await fail_job(gw, job.id, exc.code, exc.message, upstream_charged=True)
            else:
                await hand_to_worker(gw, job)
            return
        except UpstreamMalformed as exc:
            if may_move_money or job.bad_status_reads + 1 < MAX_BAD_STATUS_READS:
                await count_bad_read(gw, job, exc)
            else:
                await hand_to_worker(gw, job)
            return
        except UpstreamError:
            return  # transient: the next poll will try again, until the job is too old
        await apply_status(gw, job, data, may_move_money=may_move_money)


async def apply_status(
    gw: Gateway, job: Job, data: dict[str, Any], *, may_move_money: bool = True
) -> None:
    """Store a terminal upstream status; otherwise the next check is what the poll's claim
    scheduled (written again only to clear a count of unreadable answers).

    Without `may_move_money` a "failed" answer is recorded and the job made due now: the
    worker fails it (and refunds, by policy) from the recorded answer.
    """
    status = data["status"]
    if status == "completed" and not job.client_charged:
        # settle_after: a result is served only once the client's payment settled. The
        # settlement step schedules the next check (and its outcome completes or parks it).
        return
    if status == "completed":
        async with core_transaction(gw.engine) as session:
            await transition(
                session,
                job.id,
                [JobState.SUBMITTED],
                event="completed",
                state=JobState.COMPLETED.value,
                result=_result_of(data),
                finished_at=utcnow(),
                next_check_at=None,
            )
    elif status == "failed":
        async with core_transaction(gw.engine) as session:
            handover: dict[str, Any] = (
                {} if may_move_money else {"last_polled_at": None, "next_check_at": utcnow()}
            )
            await transition(
                session,
                job.id,
                [JobState.SUBMITTED],
                event="upstream_job_failed",
                result=_result_of(data),
                **handover,
            )
        if may_move_money:
            await _fail_upstream_job(gw, job.id, data)
    elif job.bad_status_reads:  # else the claim already scheduled the next poll
        async with core_transaction(gw.engine) as session:
            await transition(
                session,
                job.id,
                [JobState.SUBMITTED],
                event="status_pending",
                bad_status_reads=0,
                next_check_at=after(gw.settings.poll_interval_s),
            )
