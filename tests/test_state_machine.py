"""The declared job state machine: every arc's write is accepted, every other write refused.

On a real database, SQLite in a file and Postgres, both migrated to head. Also: every event
the application writes is declared, every declared arc is written somewhere, and the
diagram in docs/money-safety.md is the one rendered from the declaration.
"""

from __future__ import annotations

import ast
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine
from app.core.migrate import upgrade_to_head
from app.jobs.machine import ARCS, DOC, Arc, UndeclaredTransition, render, with_rendering
from app.jobs.models import Job, JobState
from app.jobs.repository import JOBS, JobRepository
from app.jobs.transitions import transition

ROOT = Path(__file__).resolve().parents[1]
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# A value of the right type for every column an arc may write (None is a write too).
SAMPLES: dict[str, Any] = {
    "settle_attempts": 2,
    "settle_tx": "0x" + "5e" * 32,
    "error_code": "some_code",
    "error_message": "some message",
    "next_check_at": WHEN,
    "last_polled_at": WHEN,
    "finished_at": WHEN,
    "upstream_payment_header": "eyJ4NDAyVmVyc2lvbiI6IDJ9",
    "upstream_nonce": "0x" + "ab" * 32,
    "upstream_amount": 1234,
    "upstream_pay_to": "0x" + "22" * 20,
    "upstream_valid_before": 2**40,
    "upstream_attempts": 1,
    "spend_hour": WHEN.replace(minute=0, second=0),
    "spend_reserved": 1234,
    "upstream_job_id": "up_1",
    "upstream_request_id": "req_1",
    "upstream_status_url": "http://127.0.0.1:1/jobs/up_1",
    "upstream_tx": "0x" + "70" * 32,
    "bad_status_reads": 1,
    "result": {"status": "completed", "images": ["a"]},
    "refund_amount": 1000,
    "refund_payload": {"payload": {"authorization": {"nonce": "0x01"}}},
    "refund_nonce": "0x" + "01" * 32,
    "refund_tx": "0x" + "7f" * 32,
    "refund_attempts": 3,
}
STARTS = [(arc, source) for arc in ARCS for source in JobState if source in arc.sources]


def _id(value: object) -> str:
    return value.event if isinstance(value, Arc) else str(value)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    new_database: Callable[[], str],
) -> Iterator[str]:
    if request.param == "postgres":
        yield new_database()
        return
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('machine') / 'jobs.db'}"
    upgrade_to_head(url)
    yield url


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def _job_in(engine: AsyncEngine, state: JobState) -> str:
    job = Job(
        id="job_" + secrets.token_hex(8),
        state=state.value,
        route="/v1/images/edit",
        request_body={"prompt": "p"},
        fingerprint="f" * 64,
        x402_version=2,
        payer="0x" + secrets.token_hex(20),
        pay_network="eip155:8453",
        pay_asset="0x" + "11" * 20,
        pay_amount=1000,
        pay_to="0x" + "33" * 20,
        pay_nonce="0x" + secrets.token_hex(32),
        pay_valid_before=2**40,
        payment_payload={},
        payment_requirements={},
        settle_attempts=0,
        upstream_attempts=0,
    )
    async with engine.begin() as conn:
        await JobRepository(conn).add(job)
    return job.id


async def _row(engine: AsyncEngine, job_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(JOBS).where(JOBS.c.id == job_id))).one()
    return dict(row._mapping)


def _arc_values(arc: Arc) -> dict[str, Any]:
    values = {name: SAMPLES[name] for name in arc.columns}
    if arc.to is not None:
        values["state"] = arc.to.value
    return values


def _same(stored: object, sample: object) -> bool:
    if isinstance(stored, datetime) and isinstance(sample, datetime):
        return stored.replace(tzinfo=stored.tzinfo or UTC) == sample  # SQLite: naive UTC
    return stored == sample


def test_every_written_column_has_a_sample() -> None:
    assert set().union(*(arc.columns for arc in ARCS)) <= set(SAMPLES)
    assert set(SAMPLES) <= set(JOBS.c.keys())


@pytest.mark.parametrize(("arc", "source"), STARTS, ids=_id)
async def test_a_declared_arc_is_written(engine: AsyncEngine, arc: Arc, source: JobState) -> None:
    job_id = await _job_in(engine, source)
    async with engine.begin() as conn:
        written = await transition(conn, job_id, [source], event=arc.event, **_arc_values(arc))
    assert written is not None
    row = await _row(engine, job_id)
    assert row["state"] == (arc.to or source).value
    for name in arc.columns:
        assert _same(row[name], SAMPLES[name]), name


@pytest.mark.parametrize(("arc", "source"), STARTS, ids=_id)
async def test_a_declared_arc_from_another_state_changes_nothing(
    engine: AsyncEngine, arc: Arc, source: JobState
) -> None:
    """The compare-and-set still decides: the row in another state is left alone."""
    elsewhere = next(s for s in JobState if s not in arc.sources)
    job_id = await _job_in(engine, elsewhere)
    before = await _row(engine, job_id)
    async with engine.begin() as conn:
        assert await transition(conn, job_id, [source], event=arc.event, **_arc_values(arc)) is None
    assert await _row(engine, job_id) == before


def _refusals(arc: Arc) -> Iterator[tuple[str, list[JobState], dict[str, Any]]]:
    """(what is wrong, from-states, values) for writes just off the arc."""
    sources = [s for s in JobState if s in arc.sources]
    values = _arc_values(arc)
    for outside in (s for s in JobState if s not in arc.sources):
        yield f"from {outside.value}", [*sources, outside], values
    for other in (s for s in JobState if s != arc.to):
        yield f"to {other.value}", sources, values | {"state": other.value}
    if arc.to is not None:
        yield "state not written", sources, {k: v for k, v in values.items() if k != "state"}
    for column in sorted(set(SAMPLES) - arc.columns):
        yield f"writes {column}", sources, values | {column: SAMPLES[column]}
    yield "writes pay_amount", sources, values | {"pay_amount": 1}
    yield "from no state", [], values


@pytest.mark.parametrize("arc", ARCS, ids=_id)
async def test_writes_off_the_arc_are_refused(engine: AsyncEngine, arc: Arc) -> None:
    job_id = await _job_in(engine, next(iter(arc.sources)))
    before = await _row(engine, job_id)
    refused = 0
    async with engine.begin() as conn:
        for wrong, from_states, values in _refusals(arc):
            try:
                await transition(conn, job_id, from_states, event=arc.event, **values)
            except UndeclaredTransition:
                refused += 1
            else:
                pytest.fail(f"{arc.event}: accepted a write {wrong}")
    assert refused > len(JobState)
    assert await _row(engine, job_id) == before


async def test_an_undeclared_event_is_refused(engine: AsyncEngine) -> None:
    job_id = await _job_in(engine, JobState.VERIFIED)
    async with engine.begin() as conn:
        with pytest.raises(UndeclaredTransition, match="no declared arc"):
            await transition(conn, job_id, [JobState.VERIFIED], event="teleported", state="paid")
    assert (await _row(engine, job_id))["state"] == "verified"


def _events_written(path: Path) -> Iterator[tuple[str, int, str | None]]:
    """(file, line, event) of every `transition(...)` call; event None when it is not a
    string literal nor a local name only ever assigned string literals."""
    tree = ast.parse(path.read_text())
    assigned: dict[str, set[str | None]] = {}  # per module: names are local and distinct
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (
                    zip(target.elts, node.value.elts, strict=True)
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    else [(target, node.value)]
                )
                for name, value in pairs:
                    if isinstance(name, ast.Name):
                        literal = isinstance(value, ast.Constant) and isinstance(value.value, str)
                        assigned.setdefault(name.id, set()).add(value.value if literal else None)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name != "transition":
            continue
        event = next((k.value for k in node.keywords if k.arg == "event"), None)
        where = str(path.relative_to(ROOT))
        if isinstance(event, ast.Constant) and isinstance(event.value, str):
            yield where, node.lineno, event.value
        elif isinstance(event, ast.Name) and None not in assigned.get(event.id, {None}):
            for value in assigned[event.id]:
                yield where, node.lineno, value
        else:
            yield where, node.lineno, None


def test_every_event_written_is_declared_and_every_arc_is_written() -> None:
    written = [e for path in sorted((ROOT / "app").rglob("*.py")) for e in _events_written(path)]
    assert len(written) >= len(ARCS)
    unnamed = [(where, line) for where, line, event in written if event is None]
    assert not unnamed, f"transition() calls without a literal event: {unnamed}"
    declared = {arc.event for arc in ARCS}
    undeclared = {event for _, _, event in written} - declared
    assert not undeclared, f"events written but not declared: {undeclared}"
    unused = declared - {event for _, _, event in written}
    assert not unused, f"arcs declared but never written: {unused}"


def test_the_documented_state_machine_is_the_declared_one() -> None:
    doc = DOC.read_text()
    assert render() in doc
    assert with_rendering(doc) == doc, "run: python -m app.jobs.machine --write-docs"


def test_the_diagram_is_rewritten_between_its_markers() -> None:
    stale = (
        "# Doc\n\ntext before\n<!-- state-machine:begin -->\nold\n"
        "<!-- state-machine:end -->\nafter\n"
    )
    rewritten = with_rendering(stale)
    assert rewritten == (
        "# Doc\n\ntext before\n<!-- state-machine:begin -->\n"
        f"{render()}<!-- state-machine:end -->\nafter\n"
    )
    with pytest.raises(ValueError, match="no <!-- state-machine:begin"):
        with_rendering("no markers")
    # The command prints the rendering (and --write-docs writes it into docs/money-safety.md).
    printed = subprocess.run(
        [sys.executable, "-m", "app.jobs.machine"], cwd=ROOT, capture_output=True, check=True
    )
    assert printed.stdout.decode() == render()
    for arc in ARCS:
        assert f"`{arc.event}`" in render()
