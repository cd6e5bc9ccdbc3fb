"""Pooled connections that died while idle are replaced before use (`app.core.db`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core import db
from tests.conftest import PG_HOST, PG_USER


async def _kill_other_backends(database: str) -> int:
    """What a server restart does to our pool: every connection to `database` is closed."""
    conn = await asyncpg.connect(host=PG_HOST, user=PG_USER, database="postgres")
    try:
        killed = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            database,
        )
    finally:
        await conn.close()
    return len(killed)


async def _select_one(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT 1"))).scalar_one())


async def test_idle_connection_killed_by_the_server_is_replaced(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.2)
    url = await asyncio.to_thread(new_database)
    engine = db.create_engine(url, pool_size=2, max_overflow=0)
    try:
        assert await _select_one(engine) == 1
        assert await _kill_other_backends(url.rsplit("/", 1)[1]) >= 1
        await asyncio.sleep(0.3)  # idle past the threshold: pinged, found dead, replaced
        assert await _select_one(engine) == 1
    finally:
        await engine.dispose()


async def test_connection_in_steady_use_is_not_pinged_and_the_pool_recovers(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the threshold a dead connection fails its statement (as one dying mid-request
    would); SQLAlchemy then discards the pool, and the next checkout works."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 60)
    url = await asyncio.to_thread(new_database)
    engine = db.create_engine(url, pool_size=2, max_overflow=0)
    try:
        assert await _select_one(engine) == 1
        await _kill_other_backends(url.rsplit("/", 1)[1])
        with pytest.raises(DBAPIError) as failed:
            await _select_one(engine)
        assert failed.value.connection_invalidated
        assert await _select_one(engine) == 1
    finally:
        await engine.dispose()


async def test_write_retrying_survives_a_connection_killed_under_it(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that records what cannot be asked for again is redone on a fresh connection."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 60)  # the pool will not notice on its own
    url = await asyncio.to_thread(new_database)
    engine = db.create_engine(url, pool_size=2, max_overflow=0)
    calls = 0

    async def work(session: AsyncConnection) -> int:
        nonlocal calls
        calls += 1
        await session.execute(text("CREATE TABLE IF NOT EXISTS answers (v int)"))
        await session.execute(text("INSERT INTO answers VALUES (42)"))
        return calls

    async def broken(session: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await session.execute(text("SELECT * FROM no_such_table"))

    try:
        assert await _select_one(engine) == 1
        await _kill_other_backends(url.rsplit("/", 1)[1])
        assert await db.write_retrying(engine, work) == 2  # the first connection was dead
        async with engine.connect() as conn:
            rows: int = (await conn.execute(text("SELECT count(*) FROM answers"))).scalar_one()
        assert rows == 1  # written once
        calls = 0
        with pytest.raises(DBAPIError):
            await db.write_retrying(engine, broken)
        assert calls == 1  # other errors are not retried
    finally:
        await engine.dispose()
