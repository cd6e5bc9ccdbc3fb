"""Shared fixtures: a fresh Postgres database with migrations, and a running local world."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from app.core.migrate import upgrade_to_head
from sandbox.world import World
from tests import pgadmin as admin

PG_HOST = os.environ.get("X402R_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("X402R_TEST_PG_USER", "postgres")


def _pg_url(db: str, driver: str = "asyncpg") -> str:
    return f"postgresql+{driver}://{PG_USER}@{PG_HOST}:5432/{db}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of its own for this test session, migrated with Alembic, dropped after."""
    name = f"x402r_test_{secrets.token_hex(4)}"
    admin.create_database(PG_HOST, PG_USER, name)
    url = _pg_url(name)
    upgrade_to_head(url)
    yield url
    admin.drop_database(PG_HOST, PG_USER, name)


@pytest.fixture(scope="session")
def world(pg_url: str) -> Iterator[World]:
    """Chain + facilitator + simulated upstream + one gateway on Postgres, for the session."""
    w = World(database_url=pg_url, job_delay_s=1.0).start()
    try:
        yield w
    finally:
        w.stop()
