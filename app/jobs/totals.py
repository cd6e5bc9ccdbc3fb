"""Operator totals that stay fast as the ledger grows: read from the rollups, not the ledger.

Whole UTC days come from `ledger_days`; a range that starts or ends inside a day adds that
part of the day from the ledger itself (an index range on `created_at`), so any range is
exact. Jobs by state: the unfinished ones counted from the partial index `ix_jobs_due`,
the finished ones from `job_state_days`, and in the same way for a part of a day from the
jobs themselves (an index range on `created_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, literal_column, select

from app.core.db import Executor
from app.jobs.models import FINAL_STATES, UNFINISHED_STATES, Job, LedgerEntry, LedgerKind
from app.jobs.rollup_tables import JobStateDay, LedgerDay

# Literal states, so the planner can prove the partial index's predicate.
_UNFINISHED = Job.state.in_([literal_column(f"'{s.value}'") for s in UNFINISHED_STATES])
_FINAL = sorted(s.value for s in FINAL_STATES)


@dataclass(frozen=True)
class Totals:
    """Sums of the ledger's kinds (atomic units) over some range."""

    charges: int = 0
    refunds: int = 0
    upstream_spend: int = 0

    @property
    def margin(self) -> int:
        """What the operator keeps: charges minus refunds minus the upstream's price."""
        return self.charges - self.refunds - self.upstream_spend

    def as_dict(self) -> dict[str, int]:
        """The shape of `/v1/admin/summary`'s `ledger`."""
        return {
            "charges": self.charges,
            "refunds": self.refunds,
            "upstream_spend": self.upstream_spend,
            "margin": self.margin,
        }

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.charges + other.charges,
            self.refunds + other.refunds,
            self.upstream_spend + other.upstream_spend,
        )


def _from_sums(sums: dict[str, int]) -> Totals:
    return Totals(
        charges=sums.get(LedgerKind.CHARGE.value, 0),
        refunds=sums.get(LedgerKind.REFUND.value, 0),
        upstream_spend=sums.get(LedgerKind.UPSTREAM.value, 0),
    )


def utc(moment: datetime) -> datetime:
    """`moment` in UTC (a naive one is taken as UTC)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def midnight(day: date) -> datetime:
    """The UTC moment `day` starts."""
    return datetime.combine(day, time(), tzinfo=UTC)


async def _days(db: Executor, first: date | None, end: date | None) -> dict[date, Totals]:
    """Rollup rows of the days in [first, end) (None: unbounded)."""
    stmt = select(LedgerDay.day, LedgerDay.kind, func.sum(LedgerDay.amount)).group_by(
        LedgerDay.day, LedgerDay.kind
    )
    if first is not None:
        stmt = stmt.where(LedgerDay.day >= first)
    if end is not None:
        stmt = stmt.where(LedgerDay.day < end)
    by_day: dict[date, dict[str, int]] = {}
    for day, kind, amount in (await db.execute(stmt)).all():
        by_day.setdefault(day, {})[kind] = int(amount)
    return {day: _from_sums(sums) for day, sums in by_day.items()}


async def _ledger_slice(db: Executor, since: datetime, until: datetime) -> Totals:
    """Straight from the ledger, for a part of one day."""
    stmt = (
        select(LedgerEntry.kind, func.sum(LedgerEntry.amount))
        .where(LedgerEntry.created_at >= since, LedgerEntry.created_at < until)
        .group_by(LedgerEntry.kind)
    )
    return _from_sums({k: int(n) for k, n in (await db.execute(stmt)).all()})


Span = tuple[datetime, datetime]
Days = tuple[date | None, date | None] | None  # whole UTC days [first, end); None: no day


def split_days(since: datetime | None, until: datetime | None) -> tuple[Days, list[Span]]:
    """[since, until) as whole UTC days (either end None: unbounded) and the parts of days
    around them, which are read from the tables themselves."""
    since = None if since is None else utc(since)
    until = None if until is None else utc(until)
    edges: list[Span] = []
    first = None  # first whole day
    if since is not None:
        first = since.date()
        if since != midnight(first):
            first += timedelta(days=1)
            edges.append((since, midnight(first)))
    end = None if until is None else until.date()  # whole days end before it
    if until is not None and until != midnight(until.date()):
        edges.append((midnight(until.date()), until))
    if since is not None and until is not None and first is not None and end is not None:
        if first > end:  # both ends inside one day
            edges = [(since, until)] if since < until else []
        if first >= end:
            return None, edges
    return (first, end), edges


async def by_day(
    db: Executor, since: datetime | None = None, until: datetime | None = None
) -> dict[date, Totals]:
    """Totals per UTC day for ledger rows with `since <= created_at < until`.

    Days with no ledger row are absent. A partial first or last day holds only its part.
    """
    days, edges = split_days(since, until)
    return await _add_edges(db, {} if days is None else await _days(db, *days), edges)


async def _add_edges(
    db: Executor, days: dict[date, Totals], edges: list[tuple[datetime, datetime]]
) -> dict[date, Totals]:
    for low, high in edges:
        part = await _ledger_slice(db, low, high)
        if part != Totals():
            days[low.date()] = days.get(low.date(), Totals()) + part
    return dict(sorted(days.items()))


async def totals(
    db: Executor, since: datetime | None = None, until: datetime | None = None
) -> Totals:
    """Totals for ledger rows with `since <= created_at < until` (None: unbounded)."""
    if since is None and until is None:
        stmt = select(LedgerDay.kind, func.sum(LedgerDay.amount)).group_by(LedgerDay.kind)
        return _from_sums({k: int(n) for k, n in (await db.execute(stmt)).all()})
    result = Totals()
    for day_totals in (await by_day(db, since, until)).values():
        result += day_totals
    return result


async def jobs_by_state(
    db: Executor, since: datetime | None = None, until: datetime | None = None
) -> dict[str, int]:
    """How many jobs created in [since, until) (None: unbounded) are in each state (states
    with none are absent). The unfinished ones are counted from `ix_jobs_due`, the finished
    ones from `job_state_days` for whole days and from the jobs (an index range on
    `created_at`) for parts of days."""
    days, edges = split_days(since, until)
    window = [] if since is None else [Job.created_at >= utc(since)]
    window += [] if until is None else [Job.created_at < utc(until)]
    stmts = [select(Job.state, func.count()).where(_UNFINISHED, *window).group_by(Job.state)]
    if days is not None:
        first, end = days
        stmt = select(JobStateDay.state, func.sum(JobStateDay.jobs)).group_by(JobStateDay.state)
        if first is not None:
            stmt = stmt.where(JobStateDay.day >= first)
        if end is not None:
            stmt = stmt.where(JobStateDay.day < end)
        stmts.append(stmt)
    for low, high in edges:  # finished jobs created in a part of a day
        part = (Job.state.in_(_FINAL), Job.created_at >= low, Job.created_at < high)
        stmts.append(select(Job.state, func.count()).where(*part).group_by(Job.state))
    counts: dict[str, int] = {}
    for stmt in stmts:
        for state, n in (await db.execute(stmt)).all():
            counts[state] = counts.get(state, 0) + int(n)
    return dict(sorted((state, n) for state, n in counts.items() if n))
