"""Money per payer, per key and the key ledger per day, over any window, from the group
rollups (`payer_running`, `payer_totals`, `key_days`) instead of the ledgers joined to their jobs.

As in `app.jobs.totals`: whole UTC days come from the rollups and a part of a day at either
end of the window from the ledgers themselves (an index range on `created_at`, then the
rows' jobs by primary key), so every window is exact. Per payer, whole days are the running
sums at the window's end less those at its start: at most two rows per payer, however many
days; a window that holds every day with money in it reads `payer_totals` alone.
On Postgres the report by payer reads the same rollups in one statement of its own
(`app.jobs.payer_report`); `by_payer` serves SQLite.
Sums are per kind: `charge`, `upstream`, `refund` (the on-chain ledger) and `debit`,
`credit` (the key ledger; top-ups are not counted).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, true
from sqlalchemy.orm import aliased

from app.core.db import Executor, dialect_name, plain_rows
from app.jobs.models import Job, LedgerEntry
from app.jobs.rollup_tables import KeyDay, LedgerDay, PayerRunning, PayerTotal
from app.jobs.totals import Days, midnight, split_days, utc
from app.keys.models import KeyLedgerEntry

Sums = dict[str, int]  # kind -> amount
Query = Select[*tuple[Any, ...]]
Running = dict[str, tuple[int, int, int]]  # payer -> charges, upstream, refunds
KEY_KINDS = ("debit", "credit")
ONCHAIN_KINDS = ("charge", "upstream", "refund")


def _add(into: dict[Any, Sums], group: Any, kind: str, amount: Any) -> None:
    if amount:
        sums = into.setdefault(group, {})
        sums[kind] = sums.get(kind, 0) + int(amount)


async def _collect(db: Executor, into: dict[Any, Sums], stmt: Query) -> None:
    """Add rows of (group, kind, amount) to `into`."""
    for group, kind, amount in await plain_rows(db, stmt):
        _add(into, group, str(kind), amount)


async def _running(db: Executor, stmt: Query) -> Running:
    """Rows of (payer, charges, upstream, refunds) by payer."""
    return {str(p): (int(c), int(u), int(r)) for p, c, u, r in await plain_rows(db, stmt)}


async def _running_before(db: Executor, day: date) -> Running:
    """Each payer's running sums up to the start of `day` (payers with none then absent)."""
    if dialect_name(db) == "postgresql":  # one index probe per payer
        last = (
            select(PayerRunning.charges, PayerRunning.upstream_spend, PayerRunning.refunds)
            .where(PayerRunning.payer == PayerTotal.payer, PayerRunning.day < day)
            .order_by(PayerRunning.day.desc())
            .limit(1)
            .lateral()
        )
        return await _running(db, select(PayerTotal.payer, *last.c).join(last, true()))
    other = aliased(PayerRunning)
    latest = select(func.max(other.day)).where(other.payer == PayerRunning.payer, other.day < day)
    columns = (PayerRunning.charges, PayerRunning.upstream_spend, PayerRunning.refunds)
    stmt = select(PayerRunning.payer, *columns).where(PayerRunning.day == latest.scalar_subquery())
    return await _running(db, stmt)


async def _payer_days(
    db: Executor, into: dict[str, Sums], first: date | None, end: date | None
) -> None:
    """Add each payer's on-chain sums over the whole days [first, end) to `into`."""
    if end is None:
        columns = (PayerTotal.charges, PayerTotal.upstream_spend, PayerTotal.refunds)
        upper = await _running(db, select(PayerTotal.payer, *columns))
    else:
        upper = await _running_before(db, end)
    lower = {} if first is None else await _running_before(db, first)
    for payer, (charges, upstream, refunds) in upper.items():
        c, u, r = lower.get(payer, (0, 0, 0))
        if (charges, upstream, refunds) != (c, u, r):
            into[payer] = {"charge": charges - c, "upstream": upstream - u, "refund": refunds - r}


def _on_days(stmt: Query, column: Any, days: Days) -> Query:
    first, end = days if days is not None else (None, None)
    if first is not None:
        stmt = stmt.where(column >= first)
    if end is not None:
        stmt = stmt.where(column < end)
    return stmt


async def _money_days(db: Executor) -> tuple[date | None, date | None]:
    """The first and last day either ledger has a row on (from rollups led by their day)."""
    bounds = [
        (await db.execute(select(func.min(t.day), func.max(t.day)))).one()
        for t in (LedgerDay, KeyDay)
    ]
    firsts = [first for first, _ in bounds if first is not None]
    lasts = [last for _, last in bounds if last is not None]
    return min(firsts, default=None), max(lasts, default=None)


async def unbounded_where_empty(
    db: Executor, since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The window with an end that no money lies beyond dropped (same answer, fewer rows)."""
    if since is None and until is None:
        return None, None
    first, last = await _money_days(db)
    if first is None or last is None:
        return None, None
    if since is not None and utc(since) <= midnight(first):
        since = None
    if until is not None and utc(until) >= midnight(last + timedelta(days=1)):
        until = None
    return since, until


def _edge_ledger(low: datetime, high: datetime, group: Any) -> Query:
    """On-chain ledger rows in [low, high) summed per `group` (a column of their job)."""
    return (
        select(group, LedgerEntry.kind, func.sum(LedgerEntry.amount))
        .join(Job, Job.id == LedgerEntry.job_id)
        .where(LedgerEntry.created_at >= low, LedgerEntry.created_at < high)
        .group_by(group, LedgerEntry.kind)
    )


def _edge_keyed(low: datetime, high: datetime, group: Any = KeyLedgerEntry.key_id) -> Query:
    """Key-ledger debits and credits in [low, high) summed per `group` (the key, or a column
    of their job)."""
    stmt = select(group, KeyLedgerEntry.kind, func.sum(KeyLedgerEntry.amount))
    if group is not KeyLedgerEntry.key_id:
        stmt = stmt.join(Job, Job.id == KeyLedgerEntry.job_id)
    return stmt.where(
        KeyLedgerEntry.kind.in_(KEY_KINDS),
        KeyLedgerEntry.created_at >= low,
        KeyLedgerEntry.created_at < high,
    ).group_by(group, KeyLedgerEntry.kind)


async def by_payer(
    db: Executor, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Sums]:
    """Both ledgers' sums per job payer over [since, until) (None: unbounded); a key-paid
    job's money counts under its job's payer."""
    since, until = await unbounded_where_empty(db, since, until)
    sums: dict[str, Sums] = {}
    keyed = select(KeyDay.payer, KeyDay.kind, func.sum(KeyDay.amount)).where(
        KeyDay.kind.in_(KEY_KINDS), KeyDay.payer != ""
    )
    if since is None and until is None:
        await _payer_days(db, sums, None, None)
        await _collect(db, sums, keyed.group_by(KeyDay.payer, KeyDay.kind))
        return sums
    days, edges = split_days(since, until)
    if days is not None:
        await _payer_days(db, sums, *days)
        keyed = _on_days(keyed, KeyDay.day, days).group_by(KeyDay.payer, KeyDay.kind)
        await _collect(db, sums, keyed)
    for low, high in edges:
        await _collect(db, sums, _edge_ledger(low, high, Job.payer))
        await _collect(db, sums, _edge_keyed(low, high, Job.payer))
    return sums


async def by_key(
    db: Executor, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Sums]:
    """Money of key-paid jobs per key over [since, until): their on-chain ledger rows and the
    key ledger's debits and credits. Jobs paid over x402 are not here."""
    sums: dict[str, Sums] = {}
    days, edges = split_days(since, until)
    if days is not None:
        stmt = select(KeyDay.key_id, KeyDay.kind, func.sum(KeyDay.amount))
        stmt = _on_days(stmt, KeyDay.day, days).group_by(KeyDay.key_id, KeyDay.kind)
        await _collect(db, sums, stmt)
    for low, high in edges:
        onchain = _edge_ledger(low, high, Job.api_key_id).where(Job.api_key_id.is_not(None))
        await _collect(db, sums, onchain)
        await _collect(db, sums, _edge_keyed(low, high))
    return sums


async def key_money_by_day(
    db: Executor, since: datetime | None = None, until: datetime | None = None
) -> dict[date, Sums]:
    """The key ledger's debits and credits per UTC day over [since, until); a partial first
    or last day holds only its part."""
    sums: dict[date, Sums] = {}
    days, edges = split_days(since, until)
    if days is not None:
        stmt = select(KeyDay.day, KeyDay.kind, func.sum(KeyDay.amount))
        stmt = stmt.where(KeyDay.kind.in_(KEY_KINDS)).group_by(KeyDay.day, KeyDay.kind)
        await _collect(db, sums, _on_days(stmt, KeyDay.day, days))
    for low, high in edges:
        part: dict[Any, Sums] = {}
        await _collect(db, part, _edge_keyed(low, high))
        for kinds in part.values():
            for kind, amount in kinds.items():
                _add(sums, low.date(), kind, amount)
    return sums
