"""The report and the job pages on the embedded SQLite database (the CLI tests use Postgres)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.core.db import create_engine, create_sessionmaker
from app.core.migrate import upgrade_to_head
from app.jobs.models import JobState
from app.operator.jobs import JobFilter, list_jobs
from app.operator.report import Window
from app.operator.reporting import report_document
from tests import operator_seed as seed


async def test_report_and_pages_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await seed.job(conn, JobState.COMPLETED, payer="0x" + "aa" * 20, upstream=52700)
        key = await seed.api_key(conn, "k", budget=10**6)
        await seed.key_paid_job(conn, key, JobState.FAILED, payer="0x" + "bb" * 20, amount=63240,
                                credited=True)  # fmt: skip
    sessions = create_sessionmaker(engine)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    async with sessions() as session:
        by_day = await report_document(session, Window(), "day")
        later = await report_document(session, Window(datetime.now(UTC) + timedelta(hours=1)))
        first = await list_jobs(session, JobFilter(), limit=1)
        second = await list_jobs(session, JobFilter(), limit=1, cursor=first.next_cursor)
    await engine.dispose()
    assert by_day["totals"] == {
        "revenue": 2 * 63240,
        "charges": 63240,
        "keyDebits": 63240,
        "upstreamSpend": 52700,
        "refunds": 63240,
        "onchainRefunds": 0,
        "keyCredits": 63240,
        "margin": 63240 - 52700,
    }
    assert [row["day"] for row in by_day["rows"]] == [today]
    assert later["totals"]["revenue"] == 0
    assert first.next_cursor is not None
    assert second.next_cursor is None
    assert first.jobs[0].id != second.jobs[0].id
