"""Shared fixtures: a fresh Postgres database with migrations, and a running local world."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest

from app.core.migrate import upgrade_to_head
from sandbox.world import World
from tests import pgadmin as admin

PG_HOST = os.environ.get("X402R_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("X402R_TEST_PG_USER", "postgres")


def _pg_url(db: str, driver: str = "asyncpg") -> str:
    return f"postgresql+{driver}://{PG_USER}@{PG_HOST}:5432/{db}"


@pytest.fixture(scope="session")
def new_database() -> Iterator[Callable[[], str]]:
    """Factory of fresh, migrated Postgres databases, all dropped at the end of the session.

    Every World needs a database of its own: gateways resume any due job in their database,
    and a job from another world names another chain, facilitator and upstream.
    """
    created: list[str] = []

    def make() -> str:
        name = f"x402r_test_{secrets.token_hex(4)}"
        admin.create_database(PG_HOST, PG_USER, name)
        created.append(name)
        url = _pg_url(name)
        upgrade_to_head(url)
        return url

    yield make
    for name in created:
        admin.drop_database(PG_HOST, PG_USER, name)


@pytest.fixture(scope="session")
def pg_url(new_database: Callable[[], str]) -> str:
    """The database of the session-wide `world`."""
    return new_database()


@pytest.fixture(scope="module")
def module_db(new_database: Callable[[], str]) -> str:
    """A database for a module that starts its own World."""
    return new_database()


@pytest.fixture(scope="session")
def world(pg_url: str) -> Iterator[World]:
    """Chain + facilitator + simulated upstream + one gateway on Postgres, for the session."""
    w = World(database_url=pg_url, job_delay_s=1.0).start()
    try:
        yield w
    finally:
        w.stop()
