"""The operator report, timed as `GET /v1/admin/report` computes it, against the report as it
was before the per-payer and per-key rollups (`bench.growth_previous`) and before any rollup
(the same GROUP BYs over the whole `ledger` and `jobs`).

The endpoint calls `app.operator.reporting.report_document`; so does this. The baseline is
that function's code before the rollups, written with the report module's own helpers.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.models import Job, LedgerEntry
from app.jobs.views import rfc3339
from app.keys.models import KeyLedgerEntry
from app.operator.report import Money, Window, payer_rows_merged
from app.operator.reporting import report_document
from bench.growth_previous import key_rows, key_sums, ledger_sums, payer_rows, previous_report

# name -> (grouping, days back from now; None: all time). The dashboard's default is all time.
REPORTS: dict[str, tuple[str, int | None]] = {
    "day_all": ("day", None),
    "day_30d": ("day", 30),
    "key_all": ("key", None),
    "payer_30d": ("payer", 30),
    "payer_all": ("payer", None),
}
LABELS = {
    "day_all": "all time by day",
    "day_30d": "last 30 days by day",
    "key_all": "all time by key",
    "payer_30d": "last 30 days by payer",
    "payer_all": "all time by payer",
}


def window_of(name: str, now: datetime) -> Window:
    """The report's window, as the dashboard asks for it (since = now - days)."""
    days = REPORTS[name][1]
    return Window(None if days is None else now - timedelta(days=days), None)


def _old_day(column: Any) -> Any:
    """The UTC day as the report grouped by it before: text, formatted on every row."""
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


async def _sums(
    session: AsyncSession,
    window: Window,
    ledger_group: Any,
    key_group: Any,
    *,
    join_ledger: bool,
    join_keys: bool,
) -> dict[Any, Money]:
    """Both ledgers summed per group, straight from their rows (the report before the
    rollups)."""
    sums: dict[Any, Money] = {}
    await ledger_sums(sums, session, window, ledger_group, join_jobs=join_ledger)
    await key_sums(sums, session, window, key_group, join_jobs=join_keys)
    return sums


async def _direct_rows(session: AsyncSession, window: Window, by: str) -> list[dict[str, Any]]:
    if by == "day":
        day, key_day = (
            _old_day(LedgerEntry.created_at),
            _old_day(KeyLedgerEntry.created_at),
        )
        sums = await _sums(session, window, day, key_day, join_ledger=False, join_keys=False)
        return [{"day": d} | sums[d].as_dict() for d in sorted(sums)]
    if by == "payer":
        sums = await _sums(session, window, Job.payer, Job.payer, join_ledger=True, join_keys=True)
        return payer_rows(sums)
    sums = await _sums(
        session, window, Job.api_key_id, KeyLedgerEntry.key_id, join_ledger=True, join_keys=False
    )
    return await key_rows(session, sums)


async def direct_report(session: AsyncSession, window: Window, by: str) -> dict[str, Any]:
    """`report_document` before the rollups: the ledger summed by kind (and day, key or
    payer) over the window, the jobs created in it counted by state."""
    everything = literal("all")
    whole = await _sums(session, window, everything, everything, join_ledger=False, join_keys=False)
    states = select(Job.state, func.count()).where(*window.on(Job.created_at)).group_by(Job.state)
    return {
        "since": rfc3339(window.since),
        "until": rfc3339(window.until),
        "totals": whole.get("all", Money()).as_dict(),
        "jobsByState": {s: int(n) for s, n in (await session.execute(states)).all()},
        "by": by,
        "rows": await _direct_rows(session, window, by),
    }


async def merged_report(session: AsyncSession, window: Window, by: str) -> dict[str, Any]:
    """`report_document` before the rows by payer came from one statement on Postgres: the
    sums of `group_totals.by_payer` (a probe per payer at each end of the window) merged and
    sorted in Python. The other groupings are the endpoint's own."""
    if by != "payer":
        return await report_document(session, window, by)
    document = await report_document(session, window)
    return document | {"by": by, "rows": await payer_rows_merged(session, window)}


# How a report is computed: as the endpoint does, as it did before the one statement by payer,
# before the per-payer and per-key rollups, before any rollup.
COMPUTED = {
    "endpoint": report_document,
    "merged": merged_report,
    "previous": previous_report,
    "direct": direct_report,
}
MERGED = ("payer_30d", "payer_all")  # the reports `merged_report` differs on


async def time_report(
    sessions: async_sessionmaker[AsyncSession], name: str, now: datetime, how: str
) -> float:
    """One report `name`, computed `how` (a key of `COMPUTED`); ms."""
    by, window = REPORTS[name][0], window_of(name, now)
    async with sessions() as session:
        started = time.perf_counter()
        await COMPUTED[how](session, window, by)
        return (time.perf_counter() - started) * 1000.0


async def reports_agree(sessions: async_sessionmaker[AsyncSession], now: datetime) -> bool:
    """Every report from the rollups answers exactly what the direct GROUP BYs and the report
    before the group rollups answer."""
    async with sessions() as session:
        for name, (by, _) in REPORTS.items():
            window = window_of(name, now)
            served = await report_document(session, window, by)
            for how in ("direct", "previous", *(("merged",) if name in MERGED else ())):
                other = await COMPUTED[how](session, window, by)
                if served != other:
                    print(
                        f"[bench] growth: report {name} differs ({how}): {served} != {other}"[:2000]
                    )
                    return False
    return True
