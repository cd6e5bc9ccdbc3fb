"""The daily upstream spend cap's counter (`app.jobs.spend`) on Postgres and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker
from app.core.migrate import run_alembic, upgrade_to_head
from app.jobs import spend
from app.jobs.models import SpendHour


async def _reserve(sessions: async_sessionmaker[AsyncSession], amount: int, cap: int) -> bool:
    async with sessions() as session, session.begin():
        return await spend.reserve(session, amount, cap) is not None


async def _spent(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return await spend.spent_in_window(session)


async def test_reserve_counts_up_to_the_cap_and_no_further(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    assert await _reserve(sessions, 40, cap=100)
    assert await _reserve(sessions, 60, cap=100)  # exactly at the cap is allowed
    assert not await _reserve(sessions, 1, cap=100)
    assert await _spent(sessions) == 100  # the refused reservation left nothing behind


async def test_release_takes_back_a_reservation_that_bought_nothing(engine: AsyncEngine) -> None:
    """A purchase whose job somebody else recorded first gives its reservation back."""
    sessions = create_sessionmaker(engine)
    assert await _reserve(sessions, 30, cap=100)
    async with sessions() as session, session.begin():
        hour = await spend.reserve(session, 50, cap=100)
        assert hour is not None
        await spend.release(session, hour, 50)
    assert await _spent(sessions) == 30
    assert await _reserve(sessions, 70, cap=100)  # the room is there again


async def test_window_is_the_current_hour_and_the_24_before(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    now = spend.hour_of(datetime.now(UTC))
    async with sessions() as session, session.begin():
        await session.execute(
            insert(SpendHour),
            [
                {"hour": now - timedelta(hours=24), "amount": 7},  # still counted (in full)
                {"hour": now - timedelta(hours=25), "amount": 1000},  # out of the window
            ],
        )
    assert await _spent(sessions) == 7
    assert not await _reserve(sessions, 10, cap=16)
    assert await _reserve(sessions, 9, cap=16)


async def test_concurrent_reservations_never_overrun_the_cap(
    new_database: Callable[[], str],
) -> None:
    """Twenty requests race for room for five: the hour row's lock admits exactly five."""
    eng = create_engine(await asyncio.to_thread(new_database), pool_size=20, max_overflow=0)
    try:
        sessions = create_sessionmaker(eng)
        results = await asyncio.gather(*(_reserve(sessions, 10, cap=55) for _ in range(20)))
        assert sum(results) == 5
        assert await _spent(sessions) == 50
    finally:
        await eng.dispose()


def test_migration_carries_the_last_day_of_spend_over(new_database: Callable[[], str]) -> None:
    url = new_database()
    run_alembic(url, "downgrade", "7c1e2d9a4b60")  # before spend_hours existed
    now = datetime.now(UTC)
    rows = [(now - timedelta(minutes=1), 100), (now - timedelta(minutes=2), 23)]
    rows += [(now - timedelta(hours=30), 5000)]  # too old to matter

    async def seed() -> None:
        eng = create_engine(url)
        try:
            async with eng.begin() as conn:
                for i, (created_at, amount) in enumerate(rows):
                    await conn.execute(
                        text(
                            "INSERT INTO jobs (id, state, route, request_body, fingerprint,"
                            " x402_version, payer, pay_network, pay_asset, pay_amount, pay_to,"
                            " pay_nonce, pay_valid_before, payment_payload, payment_requirements,"
                            " settle_attempts, upstream_attempts, upstream_amount, created_at)"
                            " VALUES (:id, 'submitted', '/', '{}', 'f', 2, '0xa', 'eip155:8453',"
                            " '0xb', 1, '0xc', :nonce, 1, '{}', '{}', 0, 0, :amount, :created)"
                        ),
                        {
                            "id": f"job_{i}",
                            "nonce": f"n{i}",
                            "amount": amount,
                            "created": created_at,
                        },
                    )
        finally:
            await eng.dispose()

    async def hours() -> list[tuple[datetime, int]]:
        eng = create_engine(url)
        try:
            async with eng.connect() as conn:
                result = await conn.execute(select(SpendHour.hour, SpendHour.amount))
                return [(h, a) for h, a in result.all()]
        finally:
            await eng.dispose()

    asyncio.run(seed())
    upgrade_to_head(url)
    carried = asyncio.run(hours())
    assert sum(a for _, a in carried) == 123
    assert all(h >= spend.hour_of(now) - timedelta(hours=1) for h, _ in carried)
