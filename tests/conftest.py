"""Shared fixtures: fresh Postgres databases with migrations, and local worlds on them."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine
from app.core.migrate import upgrade_to_head
from sandbox.world import World
from tests import pgadmin as admin
from tests.worlds import WorldMaker, fault_free

PG_HOST = os.environ.get("X402R_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("X402R_TEST_PG_USER", "postgres")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: the controller gets each worker's ids
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """Tests that share an id would run once under pytest-xdist: stop instead (such a file
    belongs in `make test`'s serial step)."""
    shared = sorted(nodeid for nodeid, n in Counter(ids).items() if n > 1)
    if shared:
        pytest.exit(f"tests sharing an id would run only once in parallel: {shared}", 4)


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


@pytest.fixture(params=["postgres", "sqlite"])
async def engine(
    request: pytest.FixtureRequest, new_database: Callable[[], str], tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """A fresh migrated database of each kind, for one test."""
    if request.param == "postgres":
        url = await asyncio.to_thread(new_database)  # it runs its own event loop
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        await asyncio.to_thread(upgrade_to_head, url)
    eng = create_engine(url)
    try:
        yield eng
    finally:
        await eng.dispose()


def _worlds(new_database: Callable[[], str]) -> Iterator[WorldMaker]:
    maker = WorldMaker(new_database)
    try:
        yield maker
    finally:
        maker.stop_all()


@pytest.fixture(scope="session")
def make_session_world(new_database: Callable[[], str]) -> Iterator[WorldMaker]:
    """World factory whose worlds live until the end of the session."""
    yield from _worlds(new_database)


@pytest.fixture(scope="module")
def make_module_world(new_database: Callable[[], str]) -> Iterator[WorldMaker]:
    """World factory whose worlds live until the end of the module."""
    yield from _worlds(new_database)


@pytest.fixture
def make_world(new_database: Callable[[], str]) -> Iterator[WorldMaker]:
    """World factory whose worlds live until the end of the test."""
    yield from _worlds(new_database)


@pytest.fixture(scope="session")
def world(make_session_world: WorldMaker, pg_url: str) -> World:
    """Chain + facilitator + simulated upstream + one gateway on Postgres, for the session."""
    return make_session_world(job_delay_s=1.0, database_url=pg_url)


@pytest.fixture(scope="module")
def blind_world_of_module(make_module_world: WorldMaker, module_db: str) -> World:
    """A gateway with a remote facilitator and no chain to ask (`X402R_RPC_URL` empty), allowed.

    `full`: without a chain the upstream charge is unknowable; a failed job whose upstream
    charged us is refunded, so refunds and their answers can be tested.
    """
    return make_module_world(
        remote_facilitator=True,
        job_delay_s=0.3,
        database_url=module_db,
        X402R_RPC_URL="",
        X402R_ALLOW_NO_RPC="true",
        X402R_REFUND_POLICY="full",
    )


@pytest.fixture
def blind_world(blind_world_of_module: World) -> Iterator[World]:
    """The module's world without a chain, with no faults before and after each test."""
    yield from fault_free(blind_world_of_module, facilitator=True)
