"""The fast suite's databases (SQLite and Postgres, migrated once per session) and its
recording of the arcs taken; the arc coverage test runs after every other fast test."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.core.migrate import upgrade_to_head
from tests import pgadmin as admin
from tests.conftest import PG_HOST, PG_USER
from tests.fast import arcs
from tests.fast.crashes import crash_at  # noqa: F401  # a fixture of every fast test
from tests.fast.pool import GatewayPool, Opener

COVERAGE_TEST = "test_every_arc_is_taken"
FAST_DIR = Path(__file__).parent


SHARED_MEMORY = Path("/dev/shm")  # no fsync cost where there is one


@pytest.fixture(scope="package")
def sqlite_url() -> Iterator[str]:
    """One migrated SQLite file for the fast tests (each test's payer is new)."""
    where = SHARED_MEMORY if SHARED_MEMORY.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="x402r-fast-", dir=where) as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'gateway.db'}"
        upgrade_to_head(url)
        yield url


@pytest.fixture(scope="package")
def postgres_url(new_database: Callable[[], str]) -> str:
    """One migrated Postgres database for the fast tests, commits not waiting for flushes."""
    url = new_database()
    admin.skip_commit_flush(PG_HOST, PG_USER, make_url(url).database or "")
    return url


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every fast test runs on both databases."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="session")
def arc_recorder() -> Iterator[None]:
    """Every module's `transition`, wrapped for the session (see tests/fast/arcs.py)."""
    yield from arcs.recording()


@pytest.fixture(autouse=True)
def record_arcs(arc_recorder: None) -> Iterator[None]:
    """Record the arcs each fast test takes (see tests/fast/test_arc_coverage.py)."""
    yield from arcs.counting()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The arc coverage test goes right after the other fast tests: it reads what they
    recorded."""
    last = [item for item in items if item.name == COVERAGE_TEST]
    rest = [item for item in items if item.name != COVERAGE_TEST]
    fast = [i for i, item in enumerate(rest) if FAST_DIR in Path(str(item.path)).parents]
    at = fast[-1] + 1 if fast else len(rest)
    items[:] = rest[:at] + last + rest[at:]


@pytest.fixture(scope="package")
async def gateway_pool() -> AsyncIterator[GatewayPool]:
    """Gateways reused across the fast tests, closed after them."""
    pool = GatewayPool()
    yield pool
    await pool.aclose()


@pytest.fixture
def gateways(gateway_pool: GatewayPool, database_url: str) -> Opener:
    """Open a gateway on this test's database: `async with gateways(**settings) as h`."""
    return partial(gateway_pool.open, database_url)
