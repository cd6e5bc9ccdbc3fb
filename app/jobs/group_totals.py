"""Money per payer, per key and the key ledger per day, over any window, from the group
rollups (`payer_days`, `payer_totals`, `key_days`) instead of the ledgers joined to their jobs.

As in `app.jobs.totals`: whole UTC days come from the rollups and a part of a day at either
end of the window from the ledgers themselves (an index range on `created_at`, then the
rows' jobs by primary key), so every window is exact. A window that holds every day with
money in it is read from `payer_totals`, one row per payer, however many days there are.
Sums are per kind: `charge`, `upstream`, `refund` (the on-chain ledger) and `debit`,
`credit` (the key ledger; top-ups are not counted).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select

from app.core.db import Executor
from app.jobs.models import Job, LedgerEntry
from app.jobs.rollup_tables import KeyDay, PayerDay, PayerTotal
from app.jobs.totals import Days, midnight, split_days, utc
from app.keys.models import KeyLedgerEntry

Sums = dict[str, int]  # kind -> amount
Query = Select[*tuple[Any, ...]]
KEY_KINDS = ("debit", "credit")
ONCHAIN_KINDS = ("charge", "upstream", "refund")
_COLUMNS = ("charge", "upstream", "refund")  # the order of the payer rollups' columns


def _add(into: dict[Any, Sums], group: Any, kind: str, amount: Any) -> None:
    if amount:
        sums = into.setdefault(group, {})
        sums[kind] = sums.get(kind, 0) + int(amount)


async def _collect(db: Executor, into: dict[Any, Sums], stmt: Query) -> None:
    """Add rows of (group, kind, amount) to `into`."""
    for group, kind, amount in (await db.execute(stmt)).all():
        _add(into, group, str(kind), amount)


async def _collect_columns(db: Executor, into: dict[Any, Sums], stmt: Query) -> None:
    """Add rows of (group, charges, upstream, refunds) to `into`."""
    for group, *amounts in (await db.execute(stmt)).all():
        for kind, amount in zip(_COLUMNS, amounts, strict=True):
            _add(into, group, str(kind), amount)


def _on_days(stmt: Query, column: Any, days: Days) -> Query:
    first, end = days if days is not None else (None, None)
    if first is not None:
        stmt = stmt.where(column >= first)
    if end is not None:
        stmt = stmt.where(column < end)
    return stmt


async def _money_days(db: Executor) -> tuple[date | None, date | None]:
    """The first and last day any payer or key rollup has a row for."""
    bounds = [
        (await db.execute(select(func.min(t.day), func.max(t.day)))).one()
        for t in (PayerDay, KeyDay)
    ]
    firsts = [first for first, _ in bounds if first is not None]
    lasts = [last for _, last in bounds if last is not None]
    return min(firsts, default=None), max(lasts, default=None)


async def _unbounded_where_empty(
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
    since, until = await _unbounded_where_empty(db, since, until)
    sums: dict[str, Sums] = {}
    keyed = select(KeyDay.payer, KeyDay.kind, func.sum(KeyDay.amount)).where(
        KeyDay.kind.in_(KEY_KINDS), KeyDay.payer != ""
    )
    if since is None and until is None:
        columns = (PayerTotal.charges, PayerTotal.upstream_spend, PayerTotal.refunds)
        await _collect_columns(db, sums, select(PayerTotal.payer, *columns))
        await _collect(db, sums, keyed.group_by(KeyDay.payer, KeyDay.kind))
        return sums
    days, edges = split_days(since, until)
    if days is not None:
        columns = (PayerDay.charges, PayerDay.upstream_spend, PayerDay.refunds)
        stmt = select(PayerDay.payer, *(func.sum(c) for c in columns)).group_by(PayerDay.payer)
        await _collect_columns(db, sums, _on_days(stmt, PayerDay.day, days))
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
