"""A job's share of the daily spend cap: reserved before the client is charged, trued up to
the signed amount, given back when the job ends without an upstream authorization.

The reservation is stored on the job row (hour and amount), so it lives and dies with the
job: a crash after recording the job leaves a row the recovery worker resolves, and the
path that ends the job gives the reservation back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, select, update

from app.core.db import Executor
from app.jobs import spend
from app.jobs.models import FINAL_STATES, Job, JobState

_JOBS = cast(Table, Job.__table__)
_ENDED = [s.value for s in (*FINAL_STATES, JobState.REFUNDING)]
# A job that ended without ever signing an upstream authorization: nothing of ours can be
# spent for it any more. A signed one stays counted (it may still be executed until it expires).
_UNSPENT = (
    select(_JOBS.c.spend_hour, _JOBS.c.spend_reserved)
    .where(
        _JOBS.c.id == bindparam("job_id"),
        _JOBS.c.state.in_(_ENDED),
        _JOBS.c.upstream_nonce.is_(None),
        _JOBS.c.spend_reserved > 0,
    )
    .with_for_update()
)
_CLEAR = update(_JOBS).where(_JOBS.c.id == bindparam("job_id")).values(spend_reserved=0)


class TrueUp(NamedTuple):
    """A signed amount counted for a job: the columns to store with the signature, and the
    change made to the hour's count (undone if the signature is not stored)."""

    values: dict[str, Any]
    hour: datetime
    delta: int


async def reserve_for(session: Executor, job: Job, amount: int, cap: int) -> bool:
    """Reserve `amount` for a job about to be recorded (in the same transaction); False when
    the cap has no room for it."""
    hour = await spend.reserve(session, amount, cap)
    if hour is None:
        return False
    job.spend_hour, job.spend_reserved = hour, amount
    return True


async def true_up(session: Executor, job: Job, amount: int, cap: int) -> TrueUp | None:
    """Count the signed `amount` instead of the job's reservation; None (nothing changed)
    when a higher signed amount does not fit under the cap."""
    delta = amount - (job.spend_reserved or 0)
    hour = job.spend_hour
    if hour is None:  # recorded before reservations existed: count it all now
        hour = await spend.reserve(session, amount, cap)
        if hour is None:
            return None
    elif delta > 0:
        if await spend.reserve(session, delta, cap, hour=hour) is None:
            return None
    elif delta < 0:
        await spend.release(session, hour, -delta)
    return TrueUp({"spend_hour": hour, "spend_reserved": amount}, hour, delta)


async def undo(session: Executor, counted: TrueUp) -> None:
    """Take back a true-up whose signature was not stored (somebody else moved the job)."""
    await spend.release(session, counted.hour, counted.delta)


async def release_unspent(session: Executor, job_id: str) -> None:
    """Give back the reservation of a job that ended without an upstream authorization."""
    row = (await session.execute(_UNSPENT, {"job_id": job_id})).one_or_none()
    if row is None or row.spend_hour is None:
        return
    await spend.release(session, row.spend_hour, row.spend_reserved)
    await session.execute(_CLEAR, {"job_id": job_id})
