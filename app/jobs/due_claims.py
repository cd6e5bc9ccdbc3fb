"""The worker's due-job claim, built once per shape and executed with bound times."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, Update, bindparam, literal_column, or_, select, update

from app.jobs.models import Job, JobState

_JOBS = cast(Table, Job.__table__)
_CLAIMS: dict[tuple[tuple[JobState, ...], int], Update] = {}


def claim_statement(states: tuple[JobState, ...], limit: int) -> Update:
    """`UPDATE jobs SET next_check_at = :lease_until WHERE id IN (up to `limit` due rows in
    `states`, locked, skipping rows locked elsewhere) RETURNING *`.

    The states and the limit are literals in the SQL, so the planner can prove the partial
    index of unfinished jobs (`ix_jobs_due`) applies whatever plan it caches: the claim's
    cost stays flat with the finished jobs.
    """
    stmt = _CLAIMS.get((states, limit))
    if stmt is None:
        now = bindparam("now", type_=_JOBS.c.next_check_at.type)
        due = (
            select(_JOBS.c.id)
            .where(
                _JOBS.c.state.in_([literal_column(f"'{s.value}'") for s in states]),
                or_(_JOBS.c.next_check_at.is_(None), _JOBS.c.next_check_at <= now),
            )
            .order_by(_JOBS.c.next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(_JOBS)
            .where(_JOBS.c.id.in_(due.scalar_subquery()))
            .values(next_check_at=bindparam("lease_until", type_=_JOBS.c.next_check_at.type))
            .returning(*_JOBS.c)
        )
        _CLAIMS[(states, limit)] = stmt
    return stmt
