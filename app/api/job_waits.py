"""Long polls (`GET /v1/jobs/{id}?wait=N`): one watch per job, however many clients wait.

A waiting client holds a future of its own, listed by its job's watch and by its deadline's
timer (one timer per `TIMER_STEP_S` of deadlines); it costs no task, timer or callback of
its own. One watch task per job in progress re-reads the job through `JobReads`
every `ttl` while anyone waits (those reads poll the upstream when due, at most once per
interval), and at once when this process's worker has just polled the job. Every read of
the job, whoever started it, is shown to the watch (`seen`), which answers every waiter as
soon as one shows a final state.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.api.job_cache import Rendered
from app.jobs.models import FINAL_STATES

if TYPE_CHECKING:
    from app.api.job_reads import JobReads

log = logging.getLogger(__name__)
FINAL = frozenset(state.value for state in FINAL_STATES)


# A waiter's deadline is rounded up to this step: one timer per step for every waiter whose
# deadline falls in it, not one per waiter. Answers a timed-out waiter at most this late.
TIMER_STEP_S = 0.05


class _TimedOut:
    """What a waiter's deadline puts in its future: the caller answers the latest view."""


TIMED_OUT = _TimedOut()
Waiter = asyncio.Future[Rendered | None | _TimedOut]


@dataclass(slots=True)
class _Watch:
    """The waiters of one job and what they will be answered with."""

    latest: Rendered | None
    waiting: list[Waiter] = field(default_factory=list)  # may hold waiters already answered
    waiters: int = 0  # those still waiting
    finished: bool = False  # every waiter, present and future, answered with `latest`
    kicked: bool = False  # the worker just polled the job: re-read it from the database
    # What the watch sleeps on between re-reads (a future and a timer: lighter than an
    # `asyncio.Event`, its deque, and `asyncio.timeout`, per job).
    wake: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None  # held here: the loop keeps only weak references


def _wake(watch: _Watch) -> None:
    if watch.wake is not None and not watch.wake.done():
        watch.wake.set_result(None)


def _finish(watch: _Watch, rendered: Rendered | None) -> None:
    watch.finished = True
    watch.latest = rendered
    for waiter in watch.waiting:
        if not waiter.done():
            waiter.set_result(rendered)
    watch.waiting.clear()


class JobWaits:
    """The long polls of one process."""

    def __init__(self, reads: JobReads) -> None:
        self._reads = reads
        self._watches: dict[str, _Watch] = {}
        self._deadlines: dict[int, list[Waiter]] = {}  # step number -> its waiters

    def __len__(self) -> int:
        return len(self._watches)

    def watched(self, job_id: str) -> Rendered | None:
        """The last view of a job someone waits on (a new waiter may join without a read)."""
        watch = self._watches.get(job_id)
        return None if watch is None or watch.finished else watch.latest

    def seen(self, job_id: str, rendered: Rendered | None) -> None:
        """A read of `job_id` just finished (whoever started it): its waiters may be done."""
        watch = self._watches.get(job_id)
        if watch is None or watch.finished:
            return
        if rendered is None or rendered.state in FINAL:
            _finish(watch, rendered)
        else:
            watch.latest = rendered

    def refreshed(self, job_id: str) -> None:
        """The worker just polled `job_id` upstream: its watch re-reads it now."""
        watch = self._watches.get(job_id)
        if watch is not None:
            watch.kicked = True
            _wake(watch)

    async def wait(self, job_id: str, rendered: Rendered, timeout_s: float) -> Rendered | None:
        """`rendered` once final, else the job when it becomes final or after `timeout_s`.

        None: nothing newer could be read (the caller reads the job itself and answers
        with whatever that gives, an error included).
        """
        if rendered.state in FINAL or timeout_s <= 0:
            return rendered
        watch, waiter = self.join(job_id, rendered, timeout_s)
        try:
            await waiter
        finally:
            answer = self.leave(watch, waiter)
        return answer

    def join(self, job_id: str, rendered: Rendered, timeout_s: float) -> tuple[_Watch, Waiter]:
        """Wait on a job in progress (`rendered`, timeout > 0): a future of the waiter's own,
        answered by the job's watch or at its deadline; `leave` once it is done."""
        watch = self._watches.get(job_id)
        if watch is None:
            watch = self._watches[job_id] = _Watch(latest=rendered)
            watch.task = asyncio.create_task(self._run(job_id, watch))
        loop = asyncio.get_running_loop()
        waiter: Waiter = loop.create_future()
        if watch.finished:
            waiter.set_result(watch.latest)
            return watch, waiter
        watch.waiters += 1
        watch.waiting.append(waiter)
        step = math.ceil((loop.time() + timeout_s) / TIMER_STEP_S)
        due = self._deadlines.get(step)
        if due is None:
            due = self._deadlines[step] = []
            loop.call_at(step * TIMER_STEP_S, self._time_out, step)
        due.append(waiter)
        return watch, waiter

    def leave(self, watch: _Watch, waiter: Waiter) -> Rendered | None:
        """What a waiter that `join`ed is answered with (its future done or cancelled)."""
        answer = None if waiter.cancelled() or not waiter.done() else waiter.result()
        if not watch.finished:
            watch.waiters -= 1
            if watch.waiters == 0:
                _wake(watch)  # the watch ends now rather than at its next re-read
            elif len(watch.waiting) > 2 * watch.waiters + 16:  # drop those answered
                watch.waiting[:] = [w for w in watch.waiting if not w.done()]
        return watch.latest if isinstance(answer, _TimedOut) else answer

    def _time_out(self, step: int) -> None:
        for waiter in self._deadlines.pop(step):
            if not waiter.done():
                waiter.set_result(TIMED_OUT)

    async def _run(self, job_id: str, watch: _Watch) -> None:
        reads = self._reads
        loop = asyncio.get_running_loop()
        try:
            while watch.waiters > 0:
                if not watch.kicked:
                    wake = watch.wake = loop.create_future()
                    timer = loop.call_later(reads.ttl, _wake, watch)
                    try:
                        await wake
                    finally:
                        timer.cancel()
                        watch.wake = None
                if watch.waiters == 0:
                    break
                fresh, watch.kicked = watch.kicked, False
                try:  # a read from the database shows itself to `seen`; one from memory not
                    self.seen(job_id, await (reads.reread(job_id) if fresh else reads.read(job_id)))
                except Exception:  # the database: waiters keep the last view, we retry
                    log.warning("re-reading job %s for its waiters failed", job_id, exc_info=True)
                if watch.finished:
                    return
        finally:
            if self._watches.get(job_id) is watch:
                del self._watches[job_id]
            if not watch.finished:
                _finish(watch, watch.latest)
