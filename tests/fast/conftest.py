"""The fast suite's databases (SQLite and Postgres, migrated once per session) and its
recording of the arcs taken; the arc coverage test runs after every other fast test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from app.core.migrate import upgrade_to_head
from tests.fast import arcs
from tests.fast.harness import GatewayPool, Opener

COVERAGE_TEST = "test_every_arc_is_taken"


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated SQLite file for the session (each test's payer is new)."""
    path: Path = tmp_path_factory.mktemp("fast") / "gateway.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_to_head(url)
    return url


@pytest.fixture(scope="session")
def postgres_url(new_database: Callable[[], str]) -> str:
    """One migrated Postgres database for the session."""
    return new_database()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every fast test runs on both databases."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="session", autouse=True)
def record_arcs() -> Iterator[None]:
    """Record the arcs the fast tests take (see tests/fast/test_arc_coverage.py)."""
    yield from arcs.recording()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The arc coverage test goes last: it reads what every other fast test recorded."""
    last = [item for item in items if item.name == COVERAGE_TEST]
    items[:] = [item for item in items if item.name != COVERAGE_TEST] + last


@pytest.fixture(scope="session")
async def gateway_pool() -> AsyncIterator[GatewayPool]:
    """Gateways reused across the session's fast tests."""
    pool = GatewayPool()
    yield pool
    await pool.aclose()


@pytest.fixture
def gateways(gateway_pool: GatewayPool, database_url: str) -> Opener:
    """Open a gateway on this test's database: `async with gateways(**settings) as h`."""
    return partial(gateway_pool.open, database_url)
