"""Status reads that cost the database as little as they may.

Immutable jobs are rendered once and served from a byte-bounded LRU. A job still in
progress is read from the database at most once per `ttl` per process, however many
clients poll it: concurrent readers share one in-flight read, and its rendered answer is
served until it is `ttl` old. `ttl` is half the poll interval, so a job that finished (on
any replica) is shown as finished within one poll interval. The upstream itself is asked
through the coalescing poller, never more than once per interval per job.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from starlette.applications import Starlette

from app.api.job_cache import DEFAULT_BUDGET_BYTES, ImmutableCache, Rendered, render
from app.context import Gateway
from app.jobs.models import Job, JobState
from app.jobs.polling import Poller

# Only what `job_view` shows: the payloads and signed headers stay in the database.
_VIEW_COLUMNS = (
    Job.id,
    Job.state,
    Job.upstream_request_id,
    Job.result,
    Job.error_code,
    Job.error_message,
    Job.payer,
    Job.pay_amount,
    Job.pay_asset,
    Job.pay_network,
    Job.settle_tx,
    Job.refund_amount,
    Job.refund_tx,
    Job.created_at,
    Job.finished_at,
)
_SELECT_VIEW = select(*_VIEW_COLUMNS).where(Job.id == bindparam("job_id"))
MAX_LIVE_ENTRIES = 10_000
_SUBMITTED = JobState.SUBMITTED.value


@dataclass
class _Live:
    """What this process last saw of one job in progress."""

    rendered: Rendered | None = None
    read_at: float = float("-inf")
    refreshed_at: float = float("-inf")
    task: asyncio.Task[Rendered | None] | None = None


def _finished(live: _Live) -> Callable[[asyncio.Task[Rendered | None]], None]:
    def done(task: asyncio.Task[Rendered | None]) -> None:
        live.task = None
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every reader went away

    return done


class JobReads:
    """Per-process read path of `GET /v1/jobs/{id}`."""

    def __init__(
        self, gw: Gateway, poller: Poller, *, budget_bytes: int = DEFAULT_BUDGET_BYTES
    ) -> None:
        self.gateway = gw
        self._poller = poller
        self.immutable = ImmutableCache(budget_bytes)
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self.interval = gw.settings.poll_interval_s
        self.ttl = self.interval / 2
        self.db_reads = 0

    def cached(self, job_id: str) -> Rendered | None:
        """The immutable response, if this process has it (no I/O)."""
        return self.immutable.get(job_id)

    async def read(self, job_id: str) -> Rendered | None:
        """The job's current response, or None when there is no such job."""
        hit = self.immutable.get(job_id)
        if hit is not None:
            return hit
        live = self._live.get(job_id)
        now = asyncio.get_running_loop().time()
        if live is None:
            live = self._live[job_id] = _Live()
            while len(self._live) > MAX_LIVE_ENTRIES:
                self._live.popitem(last=False)
        elif live.rendered is not None and now - live.read_at < self.ttl:
            return live.rendered
        if live.task is None:
            live.task = asyncio.create_task(self._load(job_id, live))
            live.task.add_done_callback(_finished(live))
        return await asyncio.shield(live.task)

    async def _load(self, job_id: str, live: _Live) -> Rendered | None:
        loop = asyncio.get_running_loop()
        job = await self._select(job_id)
        if job is not None and job.state == _SUBMITTED and self._refresh_due(live, loop.time()):
            live.refreshed_at = loop.time()
            await self._poller.refresh(job_id)
            job = await self._select(job_id)
        if job is None:
            self._live.pop(job_id, None)
            return None
        rendered = render(job, self.gateway.settings.base_url)
        if rendered.immutable:
            self.immutable.put(rendered)
            self._live.pop(job_id, None)
        else:
            live.rendered, live.read_at = rendered, loop.time()
        return rendered

    def _refresh_due(self, live: _Live, now: float) -> bool:
        # claim_poll admits one upstream poll per interval across replicas; asking more
        # often than that from one process only costs a database write.
        return now - live.refreshed_at >= self.interval

    async def _select(self, job_id: str) -> Job | None:
        self.db_reads += 1
        async with self.gateway.engine.connect() as conn:
            row = (await conn.execute(_SELECT_VIEW, {"job_id": job_id})).first()
        return None if row is None else Job(**row._mapping)


def job_reads(app: Starlette) -> JobReads | None:
    """The app's read path, created on first use once the lifespan has built the gateway."""
    state = app.state
    gw: Gateway | None = getattr(state, "gateway", None)
    reads: JobReads | None = getattr(state, "job_reads", None)
    if reads is not None and reads.gateway is gw:
        return reads
    poller: Poller | None = getattr(state, "poller", None)
    if gw is None or poller is None:
        return None
    reads = state.job_reads = JobReads(gw, poller)
    return reads
