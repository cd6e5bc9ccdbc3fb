"""What reports read of key money (`app.keys.reports`), on Postgres and SQLite."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import core_transaction, create_sessionmaker, transaction
from app.jobs.key_refund import refund_to_key
from app.jobs.models import Job
from app.keys import reports, service
from tests.helpers import PRICE
from tests.key_helpers import create_key_in, record_key_job


async def test_reports_find_key_paid_jobs_their_credits_and_the_ledger_sums(
    engine: AsyncEngine,
) -> None:
    key, _ = await create_key_in(engine, budget_atomic=3 * PRICE)
    jobs = [await record_key_job(engine, key["id"]) for _ in range(3)]
    async with core_transaction(engine) as conn:
        await refund_to_key(conn, jobs[0], {"error_code": "upstream_rejected"})
    sessions = create_sessionmaker(engine)
    async with transaction(sessions) as session:
        await service.topup_key(session, key["id"], PRICE, "more")
        totals = await reports.key_ledger_totals(session)
        paid = (await session.execute(select(func.count()).where(reports.KEY_PAID))).scalar()
        refunded = (await session.execute(select(Job.id).where(reports.KEY_REFUNDED))).scalars()
        refunded_ids = list(refunded)
        balanced = await reports.keys_out_of_balance(session)
    assert totals == {"debits": 3 * PRICE, "credits": PRICE, "topups": PRICE, "spent": 2 * PRICE}
    assert paid == 3
    assert refunded_ids == [jobs[0].id]
    assert balanced == []


async def test_a_key_out_of_balance_is_named(engine: AsyncEngine) -> None:
    key, _ = await create_key_in(engine, budget_atomic=3 * PRICE)
    await record_key_job(engine, key["id"])
    async with engine.begin() as conn:  # a hand edit that bypassed the budget functions
        await conn.execute(text("UPDATE api_keys SET spent_atomic = 0"))
    async with transaction(create_sessionmaker(engine)) as session:
        found = await reports.keys_out_of_balance(session)
    assert found == [{"keyId": key["id"], "spent": 0, "ledger": PRICE}]
