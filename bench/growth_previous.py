"""The operator report as it was before the per-payer and per-key rollups (migration
13c505c2cf03), kept as the growth run's baseline: by key and by payer the ledgers joined to
their jobs, the key ledger summed from its rows; on-chain totals and per-day sums already
from `ledger_days`. `ledger_sums` and `key_sums` also build the older, fully direct baseline.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Date, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs import totals
from app.jobs.models import Job, LedgerEntry
from app.jobs.views import rfc3339
from app.keys.models import ApiKey, KeyLedgerEntry
from app.operator.report import Money, Window, _key_row, days_total

_LEDGER_FIELD = {"charge": "charges", "upstream": "upstream", "refund": "onchain_refunds"}
_KEY_FIELD = {"debit": "key_debits", "credit": "key_credits"}


def _add(rows: dict[Any, Money], group: Any, field: str, total: Any) -> None:
    money = rows.setdefault(group, Money())
    setattr(money, field, getattr(money, field) + int(total))


async def ledger_sums(
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


async def key_sums(
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


def _add_onchain(rows: dict[Any, Money], group: Any, onchain: totals.Totals) -> None:
    for field, amount in (
        ("charges", onchain.charges),
        ("upstream", onchain.upstream_spend),
        ("onchain_refunds", onchain.refunds),
    ):
        if amount:
            _add(rows, group, field, amount)


async def _rows(session: AsyncSession, window: Window, by: str) -> list[dict[str, Any]]:
    sums: dict[Any, Money] = {}
    if by == "day":
        day = cast(func.timezone("UTC", KeyLedgerEntry.created_at), Date)
        await key_sums(sums, session, window, day, join_jobs=False)
        for when, onchain in (await totals.by_day(session, window.since, window.until)).items():
            _add_onchain(sums, when, onchain)
        return [{"day": d.isoformat()} | sums[d].as_dict() for d in sorted(sums)]
    if by == "payer":
        await ledger_sums(sums, session, window, Job.payer, join_jobs=True)
        await key_sums(sums, session, window, Job.payer, join_jobs=True)
        return payer_rows(sums)
    await ledger_sums(sums, session, window, Job.api_key_id, join_jobs=True)
    await key_sums(sums, session, window, KeyLedgerEntry.key_id, join_jobs=False)
    return await key_rows(session, sums)


def payer_rows(sums: dict[Any, Money]) -> list[dict[str, Any]]:
    """The report's rows by payer from sums per payer, largest revenue first."""
    rows = [{"payer": p} | m.as_dict() for p, m in sums.items()]
    return sorted(rows, key=lambda r: (-r["revenue"], r["payer"]))


async def key_rows(session: AsyncSession, sums: dict[Any, Money]) -> list[dict[str, Any]]:
    """The report's rows by key from sums per key id (None: x402-paid), largest revenue
    first, with each key's name read from `api_keys`."""
    ids = [k for k in sums if k]
    keys = {
        k.id: k for k in (await session.execute(select(ApiKey).where(ApiKey.id.in_(ids)))).scalars()
    }
    rows = [_key_row(k, keys.get(k)) | m.as_dict() for k, m in sums.items()]
    return sorted(rows, key=lambda r: (-r["revenue"], r["key"]))


async def previous_report(session: AsyncSession, window: Window, by: str) -> dict[str, Any]:
    """`report_document(session, window, by)` before the group rollups (Postgres)."""
    rows = await _rows(session, window, by)
    if by == "day":
        total = days_total(rows)
    else:
        everything: dict[Any, Money] = {}
        await key_sums(everything, session, window, literal("all"), join_jobs=False)
        onchain = await totals.totals(session, window.since, window.until)
        _add_onchain(everything, "all", onchain)
        total = everything.get("all", Money())
    return {
        "since": rfc3339(window.since),
        "until": rfc3339(window.until),
        "totals": total.as_dict(),
        "jobsByState": await totals.jobs_by_state(session, window.since, window.until),
        "by": by,
        "rows": rows,
    }
