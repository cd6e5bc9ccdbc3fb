"""Money reports: revenue (charges + key debits), upstream spend, refunds (on-chain refunds +
key credits), margin, and jobs by state, over a time window.

One function per grouping (`report_totals`, `report_by_day`, `report_by_key`,
`report_by_payer`, `jobs_by_state`). Every sum comes from the rollups the ledgers' triggers
keep (`app.jobs.totals`: the whole gateway per day, jobs by state; `app.jobs.group_totals`:
per payer, per key, the key ledger per day; on Postgres the rows by payer in one statement,
`app.jobs.payer_report`), so the report stays fast as the tables grow;
the parts of days at a window's ends are read from the ledgers, so every window is exact.
Money rows are placed in time by when they were recorded; jobs by when they were created.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import dialect_name
from app.jobs import group_totals, payer_report, totals
from app.keys.models import ApiKey

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

    def as_dict(self) -> dict[str, int]:
        """Every sum and the three derived figures."""
        return money_row(
            self.charges, self.key_debits, self.upstream, self.onchain_refunds, self.key_credits
        )


def money_row(
    charges: int, key_debits: int, upstream: int, onchain_refunds: int, key_credits: int
) -> dict[str, int]:
    """A report row's money: the sums, revenue, refunds and margin (also for the thousands
    of rows by payer, built without an object each)."""
    revenue, refunds = charges + key_debits, onchain_refunds + key_credits
    return {
        "revenue": revenue,
        "charges": charges,
        "keyDebits": key_debits,
        "upstreamSpend": upstream,
        "refunds": refunds,
        "onchainRefunds": onchain_refunds,
        "keyCredits": key_credits,
        "margin": revenue - refunds - upstream,
    }


_FIELD = {
    "charge": "charges",
    "upstream": "upstream",
    "refund": "onchain_refunds",
    "debit": "key_debits",
    "credit": "key_credits",
}


def _add(money: Money, sums: group_totals.Sums) -> Money:
    """`money` with `sums` (amounts per ledger kind) added."""
    for kind, amount in sums.items():
        field = _FIELD[kind]
        setattr(money, field, getattr(money, field) + amount)
    return money


def _as_dict(sums: group_totals.Sums) -> dict[str, int]:
    """`money_row` straight from amounts per kind."""
    return money_row(
        sums.get("charge", 0),
        sums.get("debit", 0),
        sums.get("upstream", 0),
        sums.get("refund", 0),
        sums.get("credit", 0),
    )


def _onchain(onchain: totals.Totals) -> group_totals.Sums:
    return {
        "charge": onchain.charges,
        "upstream": onchain.upstream_spend,
        "refund": onchain.refunds,
    }


async def report_totals(session: AsyncSession, window: Window) -> Money:
    """The window's sums over everything (on-chain from `ledger_days`, keys' from `key_days`)."""
    money = _add(Money(), _onchain(await totals.totals(session, window.since, window.until)))
    for sums in (await group_totals.key_money_by_day(session, window.since, window.until)).values():
        _add(money, sums)
    return money


async def report_by_day(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """Sums per UTC day, oldest first (from the per-day rollups)."""
    days: dict[date, Money] = {}
    for day, onchain in (await totals.by_day(session, window.since, window.until)).items():
        _add(days.setdefault(day, Money()), _onchain(onchain))
    keyed = await group_totals.key_money_by_day(session, window.since, window.until)
    for day, sums in keyed.items():
        _add(days.setdefault(day, Money()), sums)
    return [{"day": day.isoformat()} | days[day].as_dict() for day in sorted(days)]


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
    keyed = await group_totals.by_key(session, window.since, window.until)
    # Every on-chain row is a key-paid job's or an x402-paid job's: the x402 column is the
    # whole gateway's on-chain sums less the keys'.
    x402 = _onchain(await totals.totals(session, window.since, window.until))
    for sums in keyed.values():
        for kind in group_totals.ONCHAIN_KINDS:
            x402[kind] -= sums.get(kind, 0)
    found = await session.execute(select(ApiKey).where(ApiKey.id.in_(list(keyed))))
    keys = {key.id: key for key in found.scalars()}
    rows = [_key_row(key, keys.get(key)) | _as_dict(sums) for key, sums in keyed.items()]
    if any(x402.values()):
        rows.append(_key_row(None, None) | _as_dict(x402))
    return sorted(rows, key=lambda r: (-r["revenue"], r["key"]))


def _key_row(key_id: str | None, key: ApiKey | None) -> dict[str, Any]:
    left = None
    if key is not None and key.budget_atomic is not None:
        left = key.budget_atomic - key.spent_atomic
    return {"key": key_id or X402, "keyName": key.name if key else None, "budgetLeft": left}


async def report_by_payer(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """Sums per payer address (a key-paid job counts under its job's payer), largest first."""
    if dialect_name(session) == "postgresql":  # one statement for thousands of rows
        return await payer_report.payer_rows(session, window.since, window.until)
    return await payer_rows_merged(session, window)


async def payer_rows_merged(session: AsyncSession, window: Window) -> list[dict[str, Any]]:
    """`report_by_payer` from `group_totals.by_payer`'s sums, merged and sorted here (SQLite;
    on Postgres the growth run's baseline)."""
    payers = await group_totals.by_payer(session, window.since, window.until)
    rows = [{"payer": payer} | _as_dict(sums) for payer, sums in payers.items()]
    return sorted(rows, key=lambda r: (-r["revenue"], r["payer"]))


async def jobs_by_state(session: AsyncSession, window: Window) -> dict[str, int]:
    """How many jobs created in the window are in each state (from the rollups)."""
    return await totals.jobs_by_state(session, window.since, window.until)
