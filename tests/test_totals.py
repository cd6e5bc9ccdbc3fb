"""Fast operator totals (`app.jobs.totals`) agree with direct aggregates of the ledger and jobs,
on Postgres and SQLite, as rows are written, refunded, moved between states, and backfilled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import DateTime, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.admin import summary_of
from app.core.db import create_engine, create_sessionmaker
from app.core.migrate import run_alembic, upgrade_to_head
from app.jobs import totals
from app.jobs.models import Job, LedgerEntry, LedgerKind
from app.jobs.repository import JobRepository
from app.jobs.totals import Totals

BEFORE_ROLLUPS = "c3f8a1d2e6b4"
DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
JOB_SQL = """INSERT INTO jobs (id, state, route, request_body, fingerprint, x402_version, payer,
 pay_network, pay_asset, pay_amount, pay_to, pay_nonce, pay_valid_before, payment_payload,
 payment_requirements, settle_attempts, upstream_attempts, created_at, updated_at, error_code)
 VALUES (:id, :state, '/v1/images/edit', '{}', 'f', 2, '0xa', 'eip155:8453', '0xb', 100,
 '0xc', :id, 1, '{}', '{}', 0, 0, :at, :at, :code)"""
ENTRY_SQL = """INSERT INTO ledger (job_id, kind, amount, asset, network, from_address, to_address,
 tx_hash, created_at) VALUES (:job, :kind, :amount, '0xb', 'eip155:8453', '0xa', '0xc', '0x1',
 :at)"""
# Typed, so SQLite stores the times as the application does (its text compares as time).
JOB, ENTRY = (
    text(q).bindparams(bindparam("at", type_=DateTime(timezone=True))) for q in (JOB_SQL, ENTRY_SQL)
)


@pytest.fixture(params=["postgres", "sqlite"])
async def url(
    request: pytest.FixtureRequest, new_database: Callable[[], str], tmp_path: Path
) -> str:
    """A database of each kind, at the revision before the rollups existed."""
    if request.param == "postgres":
        db = await asyncio.to_thread(new_database)  # it runs its own event loop
        await asyncio.to_thread(run_alembic, db, "downgrade", BEFORE_ROLLUPS)
    else:
        db = f"sqlite+aiosqlite:///{tmp_path / 'totals.db'}"
        await asyncio.to_thread(run_alembic, db, "upgrade", BEFORE_ROLLUPS)
    return db


async def _jobs(engine: AsyncEngine, start: int, count: int) -> None:
    """Jobs over several days, in every kind of state, each with its ledger rows."""
    states = ["completed", "failed", "refunded", "needs_attention", "submitted", "paid"]
    async with engine.begin() as conn:
        for i in range(start, start + count):
            at = DAY0 + timedelta(hours=7 * i, minutes=i)
            state = states[i % len(states)]
            code = "refund_limit_reached" if i % 11 == 0 else None
            await conn.execute(JOB, {"id": f"job_{i}", "state": state, "at": at, "code": code})
            await conn.execute(
                ENTRY, {"job": f"job_{i}", "kind": "charge", "amount": 100 + i, "at": at}
            )
            if state != "paid":
                up = at + timedelta(minutes=30)
                await conn.execute(
                    ENTRY, {"job": f"job_{i}", "kind": "upstream", "amount": 60, "at": up}
                )
            if state == "refunded":
                back = at + timedelta(hours=20)
                await conn.execute(
                    ENTRY,
                    {"job": f"job_{i}", "kind": "refund", "amount": 100 + i, "at": back},
                )


async def _direct(engine: AsyncEngine) -> tuple[dict[str, int], dict[str, int]]:
    async with engine.connect() as conn:
        repo = JobRepository(conn)
        return await repo.ledger_totals(), await repo.count_by_state()


async def _direct_range(engine: AsyncEngine, since: datetime, until: datetime) -> Totals:
    stmt = (
        select(LedgerEntry.kind, func.sum(LedgerEntry.amount))
        .where(LedgerEntry.created_at >= since, LedgerEntry.created_at < until)
        .group_by(LedgerEntry.kind)
    )
    async with engine.connect() as conn:
        sums = {k: int(n) for k, n in (await conn.execute(stmt)).all()}
    return Totals(sums.get("charge", 0), sums.get("refund", 0), sums.get("upstream", 0))


async def _direct_states(engine: AsyncEngine, since: datetime, until: datetime) -> dict[str, int]:
    stmt = (
        select(Job.state, func.count())
        .where(Job.created_at >= since, Job.created_at < until)
        .group_by(Job.state)
    )
    async with engine.connect() as conn:
        return dict(sorted((s, int(n)) for s, n in (await conn.execute(stmt)).all()))


async def _assert_agree(engine: AsyncEngine) -> None:
    ledger, states = await _direct(engine)
    async with engine.connect() as conn:
        assert (await totals.totals(conn)).as_dict() == ledger
        assert await totals.jobs_by_state(conn) == states
        ranges = [
            (DAY0, DAY0 + timedelta(days=3)),  # whole days
            (DAY0 + timedelta(hours=5), DAY0 + timedelta(days=4, hours=2)),  # partial ends
            (DAY0 + timedelta(hours=1), DAY0 + timedelta(hours=13)),  # inside one day
            (DAY0 + timedelta(days=1, hours=23), DAY0 + timedelta(days=2, hours=1)),
            (DAY0 - timedelta(days=9), DAY0 + timedelta(days=90)),
            (DAY0 + timedelta(days=2, hours=3), datetime(2100, 1, 1, tzinfo=UTC)),  # to "now"
        ]
        for since, until in ranges:
            fast = await totals.totals(conn, since, until)
            assert fast == await _direct_range(engine, since, until), (since, until)
            states_in = await totals.jobs_by_state(conn, since, until)
            assert states_in == await _direct_states(engine, since, until), (since, until)
            days = await totals.by_day(conn, since, until)
            assert sum(days.values(), Totals()) == fast
            for day, part in days.items():
                low = max(since, datetime.combine(day, datetime.min.time(), tzinfo=UTC))
                high = min(until, low.replace(hour=0, minute=0) + timedelta(days=1))
                assert part == await _direct_range(engine, low, high), day


async def test_backfill_then_triggers_match_the_direct_aggregates(url: str) -> None:
    engine = create_engine(url)
    try:
        await _jobs(engine, 0, 40)  # before the rollups existed: backfilled by the migration
        await engine.dispose()
        await asyncio.to_thread(upgrade_to_head, url)
        await _assert_agree(engine)
        await _jobs(engine, 40, 30)  # after: counted by the triggers
        await _assert_agree(engine)
        async with engine.begin() as conn:  # a failed job refunded through the code path
            await conn.execute(text("UPDATE jobs SET state = 'refunding' WHERE id = 'job_1'"))
            repo = JobRepository(conn)
            job = Job(id="job_1", refund_amount=101, pay_asset="0xb", pay_network="eip155:8453")
            job.payer = "0xa"
            await repo.record(
                job,
                LedgerKind.REFUND,
                amount=101,
                asset="0xb",
                network="eip155:8453",
                from_address="0xh",
                to_address="0xa",
                tx_hash="0x2",
            )
            await conn.execute(text("UPDATE jobs SET state = 'refunded' WHERE id = 'job_1'"))
            await conn.execute(text("UPDATE jobs SET state = 'refunded' WHERE id = 'job_1'"))
            await conn.execute(text("UPDATE jobs SET error_code = 'x' WHERE id = 'job_2'"))
        await _assert_agree(engine)
        ledger, states = await _direct(engine)
        assert int(ledger["refunds"]) > 0
        assert states["refunded"] == 13  # 12 seeded, job_1 failed then refunded
        assert "refunding" not in states
    finally:
        await engine.dispose()


async def test_summary_answers_as_the_direct_aggregates(url: str) -> None:
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    try:
        await _jobs(engine, 0, 25)
        ledger, states = await _direct(engine)
        async with create_sessionmaker(engine)() as session:
            body = await summary_of(session)
        assert body["ledger"] == {k: str(v) for k, v in ledger.items()}
        assert body["jobsByState"] == states
        assert body["refundsWithheld"] == 3  # jobs 0, 11 and 22
        assert len(body["needsAttention"]) == states["needs_attention"]
    finally:
        await engine.dispose()


async def _write_until(engine: AsyncEngine, done: asyncio.Event, start: int) -> int:
    """New jobs with their ledger rows, and unfinished seeded jobs finished, until `done`."""
    written = 0
    while not done.is_set():
        await _jobs(engine, start + written, 1)
        async with engine.begin() as conn:  # a job seeded unfinished, finished now
            await conn.execute(
                text(
                    "UPDATE jobs SET state = 'completed' WHERE id IN "
                    "(SELECT id FROM jobs WHERE state IN ('paid', 'submitted') LIMIT 1)"
                )
            )
        written += 1
        await asyncio.sleep(0.002)
    return written


async def migrate_while_writing(engine: AsyncEngine, url: str, start: int) -> int:
    """Migrate `url` to head while `_write_until` writes (ids from `start`); its writes."""
    done = asyncio.Event()
    writer = asyncio.create_task(_write_until(engine, done, start))
    await asyncio.sleep(0.05)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        await asyncio.sleep(0.05)
    finally:
        done.set()
    return await writer


async def test_migration_counts_the_writes_made_while_it_runs(
    new_database: Callable[[], str],
) -> None:
    """The triggers count what is written after they exist, the backfill what was before."""
    url = await asyncio.to_thread(new_database)
    await asyncio.to_thread(run_alembic, url, "downgrade", BEFORE_ROLLUPS)
    engine = create_engine(url)
    try:
        await _jobs(engine, 0, 300)
        assert await migrate_while_writing(engine, url, start=300) > 5
        await _assert_agree(engine)
    finally:
        await engine.dispose()
