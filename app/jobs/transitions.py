"""The one way a job row changes: a compare-and-set that is a declared arc of the machine."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Update, bindparam, literal_column, update

from app.core.db import Executor
from app.core.logs import get_logger
from app.jobs.machine import ARCS_BY_EVENT, UndeclaredTransition
from app.jobs.models import Job, JobState
from app.jobs.repository import JOBS, job_from_row, utcnow

log = get_logger(__name__)

# The paid path's statements are built once per shape (the shapes are the code paths: a
# small, fixed set) and executed with bound values; a shape is checked against its arc when
# it is built, so a call pays one dict lookup and one comparison for the check.
_TRANSITIONS: dict[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], Update] = {}


def _transition_statement(
    event: str, from_states: list[JobState], still_null: tuple[str, ...], columns: tuple[str, ...]
) -> Update:
    """`UPDATE jobs SET <columns> WHERE id AND state IN <from_states> [AND <col> IS NULL]
    RETURNING *`, once its shape is checked against the arc `event` declares."""
    arc = ARCS_BY_EVENT.get(event)
    if arc is None:
        raise UndeclaredTransition(f"no declared arc is named {event!r}")
    if not from_states or not arc.sources.issuperset(from_states):
        states = sorted(s.value for s in from_states)
        raise UndeclaredTransition(f"{event} does not leave from all of {states}")
    if arc.to is not None and "state" not in columns:
        raise UndeclaredTransition(f"{event} must write its state ({arc.to.value})")
    if undeclared := set(columns) - arc.writable:
        raise UndeclaredTransition(f"{event} may not write {sorted(undeclared)}")
    return (
        update(JOBS)
        .where(
            JOBS.c.id == bindparam("_job_id"),
            # Literal states: an expanding IN parameter is re-rendered on every execution.
            JOBS.c.state.in_([literal_column(f"'{s.value}'") for s in from_states]),
            *(JOBS.c[name].is_(None) for name in still_null),
        )
        .values({name: bindparam(f"_set_{name}", type_=JOBS.c[name].type) for name in columns})
        .returning(*JOBS.c)
    )


async def transition(
    session: Executor,
    job_id: str,
    from_states: list[JobState],
    *,
    event: str,
    still_null: tuple[str, ...] = (),
    **values: Any,
) -> Job | None:
    """Compare-and-set a job's columns and return the row as written, in one statement;
    None if the job left `from_states` (or a `still_null` column was set) meanwhile.

    The write must be the declared arc `event` (app.jobs.machine), or UndeclaredTransition.
    """
    values.setdefault("updated_at", utcnow())
    columns = tuple(sorted(values))
    key = (event, tuple(s.value for s in from_states), still_null, columns)
    stmt = _TRANSITIONS.get(key)
    if stmt is None:  # a new shape: checked against its arc once, then cached
        stmt = _transition_statement(event, from_states, still_null, columns)
        _TRANSITIONS[key] = stmt
    to = ARCS_BY_EVENT[event].to
    if to is not None and values["state"] != to.value:
        raise UndeclaredTransition(f"{event} goes to {to.value}, not to {values['state']!r}")
    params = {f"_set_{name}": values[name] for name in columns}
    params["_job_id"] = job_id
    row = (await session.execute(stmt, params)).one_or_none()
    if row is None:
        return None
    job = job_from_row(row)
    if to is not None:  # inside a request, the line carries its request id too
        log.info("job state", job_id=job_id, state=job.state, error=job.error_code, arc=event)
    return job
