"""Status reads that cost the database as little as they may.

Immutable jobs are rendered once and served from a byte-bounded LRU. A job still in
progress is read from the database at most once per `ttl` per process, however many
clients poll it: concurrent readers share one in-flight read, and its rendered answer is
served until it is `ttl` (half the poll interval) old, then while one task reads it again,
but never once it is a whole poll interval old. So a job that finished (on any replica)
shows as finished within one poll interval, and pollers of a busy job never wait. The
upstream itself is asked through the coalescing poller, at most once per interval per job,
and only when the row says nobody polled it within the interval; a read only records what
the upstream said (a failure is failed and refunded by a worker). `cached()` is what the
ASGI fast path serves.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, timedelta

from starlette.applications import Starlette

from app.api.job_cache import ImmutableCache, Rendered, render
from app.api.job_waits import JobWaits
from app.context import Gateway
from app.core.metrics import RESULT_CACHE_BUDGET, RESULT_CACHE_BYTES, RESULT_CACHE_ENTRIES
from app.jobs.models import Job, JobState
from app.jobs.polling import Poller
from app.jobs.repository import utcnow
from app.jobs.status_reads import StatusReads

MAX_LIVE_ENTRIES = 10_000
MAX_READS_AHEAD = 4  # background re-reads in flight per process; readers never wait on them
# Upstream polls started by status reads in flight per process. Each takes database
# connections: with many jobs read at once, unbounded, they spilled into the pool's overflow
# (connections opened and closed per use). A job not polled here is polled by the worker.
MAX_REFRESHES = 4
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

    def __init__(self, gw: Gateway, poller: Poller) -> None:
        self.gateway = gw
        self._poller = poller
        self.immutable = ImmutableCache(gw.settings.result_cache_bytes)
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self.rows = StatusReads(gw.engine)
        self.interval = gw.settings.poll_interval_s
        self.ttl = self.interval / 2
        self.db_reads = 0
        self.reading_ahead = 0
        self.refreshing = 0
        self.waits = JobWaits(self)
        poller.listeners.append(self.waits.refreshed)

    def cached(self, job_id: str) -> Rendered | None:
        """What may be served right now without waiting for any I/O, if anything.

        A view in progress older than `ttl` is still served while one task reads it again,
        until it is a poll interval old: then readers wait for the fresh one.
        """
        hit = self.immutable.get(job_id)
        if hit is not None:
            return hit
        live = self._live.get(job_id)
        if live is None or live.rendered is None:
            return None
        age = asyncio.get_running_loop().time() - live.read_at
        if age >= self.interval:
            return None
        if age >= self.ttl and live.task is None and self.reading_ahead < MAX_READS_AHEAD:
            self.reading_ahead += 1
            self._loading(job_id, live).add_done_callback(self._read_ahead_done)
        return live.rendered

    def _read_ahead_done(self, _: asyncio.Task[Rendered | None]) -> None:
        self.reading_ahead -= 1

    async def read(self, job_id: str) -> Rendered | None:
        """The job's current response, or None when there is no such job."""
        hit = self.cached(job_id)
        if hit is not None:
            return hit
        live = self._live.get(job_id)
        if live is None:
            live = self._live[job_id] = _Live()
            while len(self._live) > MAX_LIVE_ENTRIES:
                self._live.popitem(last=False)
        return await asyncio.shield(self._loading(job_id, live))

    async def reread(self, job_id: str) -> Rendered | None:
        """Like `read`, from a database read that starts after this call, not from memory."""
        hit = self.immutable.get(job_id)
        if hit is not None:
            return hit
        live = self._live.get(job_id)
        if live is None:
            return await self.read(job_id)
        earlier = live.task
        if earlier is not None:  # it may have read the row before what we want to see
            with suppress(Exception):
                await asyncio.shield(earlier)
        return await asyncio.shield(self._loading(job_id, live))

    def _loading(self, job_id: str, live: _Live) -> asyncio.Task[Rendered | None]:
        """The read of `job_id` in flight, started if there is none."""
        if live.task is None:
            live.task = asyncio.create_task(self._load(job_id, live))
            live.task.add_done_callback(_finished(live))
        return live.task

    async def _load(self, job_id: str, live: _Live) -> Rendered | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        found = await self._select(job_id)
        if found is not None and self._refresh_due(found[0], live, started):
            live.refreshed_at = loop.time()
            self.refreshing += 1
            try:
                await self._poller.refresh(job_id, may_move_money=False)
            finally:
                self.refreshing -= 1
            started = loop.time()
            found = await self._select(job_id)
        if found is None:
            self._live.pop(job_id, None)
            self.waits.seen(job_id, None)
            return None
        job, owner_hash = found
        rendered = render(job, self.gateway.settings.base_url, owner_hash)
        if rendered.immutable:
            self.immutable.put(rendered)
            self._live.pop(job_id, None)
        else:
            live.rendered, live.read_at = rendered, started
        self.waits.seen(job_id, rendered)
        return rendered

    def _refresh_due(self, job: Job, live: _Live, now: float) -> bool:
        # `claim_poll` admits one upstream poll per interval across replicas: asking when it
        # must refuse (polled recently, here or on any replica) only costs a database write.
        if job.state != _SUBMITTED or now - live.refreshed_at < self.interval:
            return False
        if self.refreshing >= MAX_REFRESHES:  # the worker polls it; the pool stays for others
            return False
        polled = job.last_polled_at
        if polled is None:
            return True
        if polled.tzinfo is None:  # SQLite gives naive UTC
            polled = polled.replace(tzinfo=UTC)
        return polled <= utcnow() - timedelta(seconds=self.interval)

    async def _select(self, job_id: str) -> tuple[Job, str | None] | None:
        self.db_reads += 1
        return await self.rows.fetch_owned(job_id)

    async def aclose(self) -> None:
        """Release what the read path holds (its database pool)."""
        await self.rows.aclose()


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


def cache_gauges(app: Starlette) -> None:
    """Set the finished-job cache's gauges (at scrape), without creating the read path."""
    reads: JobReads | None = getattr(app.state, "job_reads", None)
    gw: Gateway | None = getattr(app.state, "gateway", None)
    cache = reads.immutable if reads is not None and reads.gateway is gw else None
    RESULT_CACHE_BYTES.set(cache.used_bytes if cache is not None else 0)
    RESULT_CACHE_ENTRIES.set(len(cache) if cache is not None else 0)
    if gw is not None:
        RESULT_CACHE_BUDGET.set(gw.settings.result_cache_bytes)


async def close_job_reads(app: Starlette) -> None:
    """Called when the application stops."""
    reads: JobReads | None = getattr(app.state, "job_reads", None)
    if reads is not None:
        await reads.aclose()
