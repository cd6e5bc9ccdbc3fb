"""The report by payer, by key and by day (`app.jobs.group_totals` under `app.operator.report`)
agrees with sums of the ledgers' own rows, on Postgres and SQLite: after the migration's
backfill, for rows the triggers counted, for key-paid jobs, credits and on-chain refunds,
over windows of whole days, parts of days and all time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine, create_sessionmaker
from app.core.migrate import run_alembic, upgrade_to_head
from app.jobs.models import Job, LedgerEntry
from app.keys.models import KeyLedgerEntry
from app.operator import report
from app.operator.report import Money, Window
from tests.test_totals import BEFORE_ROLLUPS, DAY0, ENTRY, JOB_SQL, migrate_while_writing, url

__all__ = ["url"]  # the fixture: a Postgres and a SQLite database before the rollups

PAYERS = ("0x" + "1a" * 20, "0x" + "2b" * 20, "0x" + "3c" * 20)
KEYS = ("key_a", "key_b")
KEY_SQL = """INSERT INTO api_keys (id, name, prefix, secret_hash, spent_atomic, charge_at,
 own_jobs_only) VALUES (:id, :id, 'p', :id, 0, 'sale', false)"""
KEYED_SQL = """INSERT INTO key_ledger (key_id, job_id, kind, amount, reason, created_at)
 VALUES (:key, :job, :kind, :amount, NULL, :at)"""
KEY_JOB, KEYED = (
    text(q).bindparams(bindparam("at", type_=DateTime(timezone=True)))
    for q in (JOB_SQL.replace("'0xa'", ":payer"), KEYED_SQL)
)
WINDOWS = [
    (None, None),
    (DAY0, DAY0 + timedelta(days=3)),  # whole days
    (DAY0 + timedelta(hours=5), DAY0 + timedelta(days=4, hours=2)),  # parts of days at both ends
    (DAY0 + timedelta(hours=1), DAY0 + timedelta(hours=13)),  # inside one day
    (DAY0 + timedelta(days=2, hours=3), None),  # to now
    (None, DAY0 + timedelta(days=5, hours=7)),  # from the start
    (DAY0 - timedelta(days=9), DAY0 + timedelta(days=900)),  # every day with money in it
]


async def _keyed_jobs(engine: AsyncEngine, start: int, count: int) -> None:
    """Jobs of several payers over several days; every third one paid with a key (debited,
    and credited when it failed), the others over x402 (refunded on chain when they failed);
    and a top-up, which is not revenue."""
    async with engine.begin() as conn:
        for i in range(start, start + count):
            at = DAY0 + timedelta(hours=5 * i, minutes=7 * i)
            job, payer = f"gjob_{i}", PAYERS[i % len(PAYERS)]
            key = KEYS[i % 2] if i % 3 == 0 else None
            failed = i % 5 == 0
            state = "refunded" if failed else "completed"
            row = {"id": job, "state": state, "at": at, "code": None, "payer": payer}
            await conn.execute(KEY_JOB, row)
            if key is not None:
                await conn.execute(
                    text("UPDATE jobs SET api_key_id = :k WHERE id = :j"), {"k": key, "j": job}
                )
                keyed = {"key": key, "job": job, "amount": 90 + i}
                await conn.execute(KEYED, keyed | {"kind": "debit", "at": at})
            else:
                await conn.execute(
                    ENTRY, {"job": job, "kind": "charge", "amount": 90 + i, "at": at}
                )
            up = at + timedelta(minutes=40)
            await conn.execute(ENTRY, {"job": job, "kind": "upstream", "amount": 50, "at": up})
            back = at + timedelta(hours=19)
            if failed and key is not None:
                await conn.execute(KEYED, keyed | {"kind": "credit", "at": back})
            elif failed:
                await conn.execute(
                    ENTRY, {"job": job, "kind": "refund", "amount": 90 + i, "at": back}
                )
        topup = {"key": KEYS[0], "job": None, "kind": "topup", "amount": 10**6, "at": DAY0}
        await conn.execute(KEYED, topup)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _money_rows(engine: AsyncEngine) -> list[tuple[str, int, datetime, Any, Any]]:
    """(kind, amount, created_at, payer, key) of every money row of both ledgers."""
    onchain = select(
        LedgerEntry.kind, LedgerEntry.amount, LedgerEntry.created_at, Job.payer, Job.api_key_id
    ).join(Job, Job.id == LedgerEntry.job_id)
    keyed = (
        select(
            KeyLedgerEntry.kind,
            KeyLedgerEntry.amount,
            KeyLedgerEntry.created_at,
            Job.payer,
            KeyLedgerEntry.key_id,
        )
        .outerjoin(Job, Job.id == KeyLedgerEntry.job_id)
        .where(KeyLedgerEntry.kind.in_(["debit", "credit"]))
    )
    async with engine.connect() as conn:
        rows = [*(await conn.execute(onchain)).all(), *(await conn.execute(keyed)).all()]
    return [(k, int(a), _utc(at), p, key) for k, a, at, p, key in rows]


def _expected(rows: list[Any], since: datetime | None, until: datetime | None, by: str) -> Any:
    """What the report must say, summed in Python from the rows themselves."""
    fields = {"charge": "charges", "upstream": "upstream", "refund": "onchain_refunds"}
    fields |= {"debit": "key_debits", "credit": "key_credits"}
    groups: dict[Any, Money] = {}
    for kind, amount, at, payer, key in rows:
        if (since is not None and at < since) or (until is not None and at >= until):
            continue
        group = {"payer": payer, "key": key or "x402", "day": at.date().isoformat()}[by]
        if group is None:  # a key-ledger row without a job has no payer
            continue
        money = groups.setdefault(group, Money())
        setattr(money, fields[kind], getattr(money, fields[kind]) + amount)
    return {group: money.as_dict() for group, money in groups.items()}


async def _assert_reports_agree(
    engine: AsyncEngine, windows: list[tuple[datetime | None, datetime | None]] = WINDOWS
) -> None:
    rows = await _money_rows(engine)
    async with create_sessionmaker(engine)() as session:
        for since, until in windows:
            window = Window(since, until)
            by_payer = await report.report_by_payer(session, window)
            assert {r.pop("payer"): r for r in by_payer} == _expected(rows, since, until, "payer")
            by_key = await report.report_by_key(session, window)
            got = {
                r["key"]: {k: v for k, v in r.items() if k not in ("key", "keyName", "budgetLeft")}
                for r in by_key
            }
            assert got == _expected(rows, since, until, "key"), (since, until)
            by_day = await report.report_by_day(session, window)
            assert {r.pop("day"): r for r in by_day} == _expected(rows, since, until, "day")
            everything = _expected(rows, since, until, "day").values()
            total = await report.report_totals(session, window)
            assert total.as_dict() == {k: sum(d[k] for d in everything) for k in total.as_dict()}


async def _keys(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for key in KEYS:
            await conn.execute(text(KEY_SQL), {"id": key})


async def test_group_rollups_backfilled_then_kept_by_the_triggers(url: str) -> None:
    engine = create_engine(url)
    try:
        await _keys(engine)
        await _keyed_jobs(engine, 0, 30)  # before the rollups: backfilled by the migration
        await engine.dispose()
        await asyncio.to_thread(upgrade_to_head, url)
        await _assert_reports_agree(engine)
        await _keyed_jobs(engine, 30, 25)  # after: counted by the triggers
        await _assert_reports_agree(engine)
    finally:
        await engine.dispose()


async def test_group_rollups_count_the_writes_made_while_the_migration_runs(
    new_database: Callable[[], str],
) -> None:
    """On Postgres, rows written while the migration runs are counted exactly once."""
    url = await asyncio.to_thread(new_database)
    await asyncio.to_thread(run_alembic, url, "downgrade", BEFORE_ROLLUPS)
    engine = create_engine(url)
    try:
        await _keys(engine)
        await _keyed_jobs(engine, 0, 200)
        assert await migrate_while_writing(engine, url, start=300) > 5
        await _assert_reports_agree(engine)
    finally:
        await engine.dispose()


async def test_a_row_recorded_before_rows_already_counted(url: str) -> None:
    """A payer's row with an earlier time than rows already counted (a clock set back):
    the running sums of the later days take it in too."""
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    later = DAY0 + timedelta(days=40)
    try:
        await _keys(engine)
        async with engine.begin() as conn:
            for i, hours in enumerate((2, 50, 26, 1, 49)):  # days 40, 42, 41, 40, 42
                at, job = later + timedelta(hours=hours), f"late_{i}"
                row = {"id": job, "state": "completed", "at": at, "code": None, "payer": PAYERS[0]}
                await conn.execute(KEY_JOB, row)
                await conn.execute(ENTRY, {"job": job, "kind": "charge", "amount": 7 + i, "at": at})
        windows = [(later + timedelta(days=d, hours=h), None) for d in (0, 1, 2) for h in (0, 12)]
        windows += [(None, later + timedelta(days=d, hours=h)) for d in (1, 2, 3) for h in (0, 12)]
        windows += [(later + timedelta(days=1), later + timedelta(days=2)), (None, None)]
        await _assert_reports_agree(engine, windows)
    finally:
        await engine.dispose()


async def test_payers_before_inside_and_long_before_a_window(url: str) -> None:
    """Payers with rows only before the window, only inside it, and with their last row
    before a bound further back than the week read by day (then probed one by one); windows
    starting and ending near either midnight of their day, shorter than a day, exactly one."""
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    day = DAY0 + timedelta(days=60)
    old, sparse, inside = PAYERS
    # (payer, days after `day`, hours): old only early, inside only days 20 and 21
    rows = [(old, 0, 10), (old, 1, 2), (sparse, 0, 5), (sparse, 20, 3), (sparse, 20, 22)]
    rows += [(sparse, 30, 12), (inside, 20, 1), (inside, 21, 23.5)]
    try:
        await _keys(engine)
        async with engine.begin() as conn:
            for i, (payer, days, hours) in enumerate(rows):
                at, job = day + timedelta(days=days, hours=hours), f"w_{i}"
                row = {"id": job, "state": "completed", "at": at, "code": None, "payer": payer}
                await conn.execute(KEY_JOB, row)
                await conn.execute(
                    ENTRY, {"job": job, "kind": "charge", "amount": 10 + i, "at": at}
                )
            at = day + timedelta(days=20, hours=21)  # a key-paid job of `inside`, credited later
            row = {"id": "w_key", "state": "refunded", "at": at, "code": None, "payer": inside}
            await conn.execute(KEY_JOB, row)
            await conn.execute(text("UPDATE jobs SET api_key_id = 'key_a' WHERE id = 'w_key'"))
            keyed = {"key": "key_a", "job": "w_key", "amount": 70}
            await conn.execute(KEYED, keyed | {"kind": "debit", "at": at})
            back = day + timedelta(days=21, hours=4)
            await conn.execute(KEYED, keyed | {"kind": "credit", "at": back})

        def at(days: float, hours: float = 0) -> datetime:
            return day + timedelta(days=days, hours=hours)

        windows: list[tuple[datetime | None, datetime | None]] = [
            (at(20, 2), None),  # nearer its day's start: that part taken off
            (at(20, 21.5), None),  # nearer its end: the rest of the day added
            (at(1, 3), None),  # `old` has nothing in it
            (at(25), None),  # `sparse`'s last row before: within the week read by day
            (at(28), None),  # more than a week before: probed
            (at(10, 12), at(20, 3)),  # ends at a row (excluded), nearer its day's start
            (at(15), at(25, 20)),  # ends nearer its day's end: the rest taken off
            (None, at(20, 22.5)),
            (at(19, 23), at(20, 4)),  # shorter than a day, over midnight
            (at(20), at(21)),  # exactly one day
            (at(27, 6), at(40, 18)),
        ]
        await _assert_reports_agree(engine, windows)
        async with create_sessionmaker(engine)() as session:
            for since, until in windows:
                got = await report.report_by_payer(session, Window(since, until))
                assert got == sorted(got, key=lambda r: (-r["revenue"], r["payer"]))
                assert all(any(v for k, v in r.items() if k != "payer") for r in got)
    finally:
        await engine.dispose()
