"""Money reports: revenue (charges + key debits), upstream spend, refunds (on-chain refunds +
key credits), margin, and jobs by state, over a time window.

One function per grouping (`report_totals`, `report_by_day`, `report_by_key`,
`report_by_payer`, `jobs_by_state`). The whole-gateway and per-day on-chain sums, and jobs
by state, come from the per-day rollups (`app.jobs.totals`), so they stay fast as the tables
grow; per key and per payer group the ledger itself (through its jobs). Money rows are placed
in time by when they were recorded; jobs by when they were created.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Date, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import dialect_name
from app.jobs import totals
from app.jobs.models import Job, LedgerEntry
from app.keys.models import ApiKey, KeyLedgerEntry

X402 = "x402"  # the key column of money paid over x402 (no API key)
GROUPINGS = ("day", "key", "payer")


def as_utc(moment: datetime) -> datetime:
    """`moment` with a time zone: UTC when it names none."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """[since, until) in UTC; either end open when None."""

    since: datetime | None = None
    until: datetime | None = None

    def on(self, column: Any) -> list[Any]:
        """The window as conditions on a timestamp column."""
        where = []
        if self.since is not None:
            where.append(column >= as_utc(self.since))
        if self.until is not None:
            where.append(column < as_utc(self.until))
        return where


@dataclass
class Money:
    """One report row's sums, in atomic units."""

    charges: int = 0
    key_debits: int = 0
    upstream: int = 0
    onchain_refunds: int = 0
    key_credits: int = 0

    @property
    def revenue(self) -> int:
        return self.charges + self.key_debits

    @property
    def refunds(self) -> int:
        return self.onchain_refunds + self.key_credits

    @property
    def margin(self) -> int:
        return self.revenue - self.refunds - self.upstream

    def as_dict(self) -> dict[str, int]:
        """Every sum and the three derived figures."""
        return {
            "revenue": self.revenue,
            "charges": self.charges,
            "keyDebits": self.key_debits,
            "upstreamSpend": self.upstream,
            "refunds": self.refunds,
            "onchainRefunds": self.onchain_refunds,
            "keyCredits": self.key_credits,
            "margin": self.margin,
        }


_LEDGER_FIELD = {"charge": "charges", "upstream": "upstream", "refund": "onchain_refunds"}
_KEY_FIELD = {"debit": "key_debits", "credit": "key_credits"}  # top-ups are not revenue


def _day(session: AsyncSession, column: Any) -> ColumnElement[date]:
    """A timestamp's UTC day, in the database's own dialect. A date, not text: formatting
    every row (`to_char`) took most of the by-day report at a million jobs."""
    if dialect_name(session) == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column, type_=Date)


def _add(rows: dict[Any, Money], group: Any, field: str, total: Any) -> None:
    money = rows.setdefault(group, Money())
    setattr(money, field, getattr(money, field) + int(total))


async def _ledger_sums(
    rows: dict[Any, Money], session: AsyncSession, window: Window, group: Any, *, join_jobs: bool
) -> None:
    """Add the on-chain ledger's sums per `group` (a column of the ledger or, with
    `join_jobs`, of its jobs) to `rows`."""
    ledger = select(group, LedgerEntry.kind, func.sum(LedgerEntry.amount)).select_from(LedgerEntry)
    if join_jobs:
        ledger = ledger.join(Job, Job.id == LedgerEntry.job_id)
    ledger = ledger.where(*window.on(LedgerEntry.created_at)).group_by(group, LedgerEntry.kind)
    for key, kind, total in (await session.execute(ledger)).all():
        _add(rows, key, _LEDGER_FIELD[str(kind)], total)


def _add_onchain(rows: dict[Any, Money], group: Any, onchain: totals.Totals) -> None:
    """Add one rollup total (charges, upstream spend, refunds) to `rows[group]`."""
    for field, amount in (
        ("charges", onchain.charges),
        ("upstream", onchain.upstream_spend),
        ("onchain_refunds", onchain.refunds),
    ):
        if amount:
            _add(rows, group, field, amount)


async def _key_sums(
    rows: dict[Any, Money], session: AsyncSession, window: Window, group: Any, *, join_jobs: bool
) -> None:
    """Add the key ledger's debits and credits per `group` (a column of the key ledger or,
    with `join_jobs`, of its jobs) to `rows`; top-ups are not revenue."""
    keyed = (
        select(group, KeyLedgerEntry.kind, func.sum(KeyLedgerEntry.amount))
        .select_from(KeyLedgerEntry)
        .where(KeyLedgerEntry.kind.in_(list(_KEY_FIELD)), *window.on(KeyLedgerEntry.created_at))
    )
    if join_jobs:
        keyed = keyed.join(Job, Job.id == KeyLedgerEntry.job_id)
    keyed = keyed.group_by(group, KeyLedgerEntry.kind)
    for key, kind, total in (await session.execute(keyed)).all():
        _add(rows, key, _KEY_FIELD[str(kind)], total)


async def report_totals(session: AsyncSession, window: Window) -> Money:
    """The window's sums over everything (on-chain sums from the per-day rollups)."""
    sums: dict[Any, Money] = {}
    await _key_sums(sums, session, window, literal("all"), join_jobs=False)
    _add_onchain(sums, "all", await totals.totals(session, window.since, window.until))
    return sums.get("all", Money())


async def report_by_day(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """Sums per UTC day, oldest first (on-chain sums from the per-day rollups)."""
    sums: dict[Any, Money] = {}
    await _key_sums(
        sums, session, window, _day(session, KeyLedgerEntry.created_at), join_jobs=False
    )
    for day, onchain in (await totals.by_day(session, window.since, window.until)).items():
        _add_onchain(sums, day, onchain)
    return [{"day": day.isoformat()} | sums[day].as_dict() for day in sorted(sums)]


def days_total(days: list[dict[str, Any]]) -> Money:
    """The sum of `report_by_day`'s rows."""
    total = Money()
    for day in days:
        total.charges += day["charges"]
        total.key_debits += day["keyDebits"]
        total.upstream += day["upstreamSpend"]
        total.onchain_refunds += day["onchainRefunds"]
        total.key_credits += day["keyCredits"]
    return total


async def report_by_key(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """Sums per API key (`x402` for jobs paid over x402), by revenue, largest first."""
    # Ledger rows belong to a key through their job; key-ledger rows name their key.
    sums: dict[Any, Money] = {}
    await _ledger_sums(sums, session, window, Job.api_key_id, join_jobs=True)
    await _key_sums(sums, session, window, KeyLedgerEntry.key_id, join_jobs=False)
    keys = {
        k.id: k
        for k in (
            await session.execute(select(ApiKey).where(ApiKey.id.in_([k for k in sums if k])))
        ).scalars()
    }
    rows = [_key_row(key, keys.get(key)) | money.as_dict() for key, money in sums.items()]
    return sorted(rows, key=lambda r: (-r["revenue"], r["key"]))


def _key_row(key_id: str | None, key: ApiKey | None) -> dict[str, Any]:
    left = None
    if key is not None and key.budget_atomic is not None:
        left = key.budget_atomic - key.spent_atomic
    return {"key": key_id or X402, "keyName": key.name if key else None, "budgetLeft": left}


async def report_by_payer(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """Sums per payer address (a key-paid job counts under its job's payer), largest first."""
    sums: dict[Any, Money] = {}
    await _ledger_sums(sums, session, window, Job.payer, join_jobs=True)
    await _key_sums(sums, session, window, Job.payer, join_jobs=True)
    rows = [{"payer": payer} | money.as_dict() for payer, money in sums.items()]
    return sorted(rows, key=lambda r: (-r["revenue"], r["payer"]))


async def jobs_by_state(session: AsyncSession, window: Window) -> dict[str, int]:
    """How many jobs created in the window are in each state (from the rollups)."""
    return await totals.jobs_by_state(session, window.since, window.until)
