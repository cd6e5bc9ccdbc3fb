"""Migrations: upgrade and downgrade cleanly on Postgres and SQLite; the ledger is append-only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.migrate import run_alembic, upgrade_to_head

JOB = """INSERT INTO jobs (id, state, route, request_body, fingerprint, x402_version, payer,
 pay_network, pay_asset, pay_amount, pay_to, pay_nonce, pay_valid_before, payment_payload,
 payment_requirements, settle_attempts, upstream_attempts)
 VALUES ('job_x', 'paid', '/v1/images/edit', '{}', 'f', 2, '0xa', 'eip155:8453', '0xb', 1,
 '0xc', '0xd', 1, '{}', '{}', 0, 0)"""
ENTRY = """INSERT INTO ledger (job_id, kind, amount, asset, network, from_address, to_address,
 tx_hash) VALUES ('job_x', '{kind}', {amount}, '0xb', 'eip155:8453', '0xa', '0xc', '0x1')"""


async def _assert_append_only(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(JOB))
            await conn.execute(text(ENTRY.format(kind="charge", amount=5)))
        for bad in (
            "UPDATE ledger SET amount = 1",
            "DELETE FROM ledger",
            ENTRY.format(kind="refund", amount=0),
            ENTRY.format(kind="gift", amount=5),
        ):
            with pytest.raises(DBAPIError):
                async with engine.begin() as conn:
                    await conn.execute(text(bad))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT amount FROM ledger"))).scalar_one() == 5
    finally:
        await engine.dispose()


# Sync tests: Alembic's async env runs its own event loop.
def test_postgres_upgrade_downgrade_and_append_only_ledger(
    new_database: Callable[[], str],
) -> None:
    url = new_database()  # already at head
    run_alembic(url, "check")  # the models and the migrations agree
    asyncio.run(_assert_append_only(url))
    run_alembic(url, "downgrade", "base")
    upgrade_to_head(url)


def test_sqlite_upgrade_downgrade_and_append_only_ledger(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    asyncio.run(_assert_append_only(url))
    run_alembic(url, "downgrade", "base")
    upgrade_to_head(url)
