"""An operator's refund of a parked key-paid job credits its key, once (Postgres, SQLite)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_sessionmaker, transaction
from app.jobs.models import JobState, OperatorAction
from app.jobs.transitions import transition
from app.keys import service
from app.keys.models import KeyLedgerEntry
from app.operator import actions
from app.operator.actions import ActionRefused
from tests.helpers import PRICE
from tests.key_helpers import create_key_in, record_key_job

pytestmark = pytest.mark.parametrize("engine", ["postgres", "sqlite"], indirect=True)


async def _park(engine: AsyncEngine, job_id: str) -> None:
    """Park the job as a worker does when it cannot know whether the upstream charged us."""
    async with transaction(create_sessionmaker(engine)) as session:
        await transition(
            session,
            job_id,
            [JobState.PAID],
            event="fail_undecided",
            state=JobState.NEEDS_ATTENTION.value,
            error_code="upstream_unreachable",
            error_message="the upstream did not answer",
        )


async def _refund(engine: AsyncEngine, job_id: str) -> str:
    async with transaction(create_sessionmaker(engine)) as session:
        job = await actions.refund(session, job_id, reason="upstream confirmed", actor="ops")
        return job.state


async def test_a_parked_key_paid_job_is_credited_back_once(engine: AsyncEngine) -> None:
    view, _ = await create_key_in(engine, budget_atomic=3 * PRICE)
    job = await record_key_job(engine, view["id"])
    await _park(engine, job.id)

    results = await asyncio.gather(
        *(_refund(engine, job.id) for _ in range(3)), return_exceptions=True
    )
    assert [r for r in results if r == JobState.REFUNDED.value] == [JobState.REFUNDED.value]
    refused = [r for r in results if isinstance(r, ActionRefused)]
    assert len(refused) == 2, results
    assert {r.code for r in refused} <= {"job_not_parked", "job_not_refundable"}

    async with transaction(create_sessionmaker(engine)) as session:
        key = await service.show_key(session, view["id"])
        credits = await session.scalar(
            select(func.count()).where(
                KeyLedgerEntry.job_id == job.id, KeyLedgerEntry.kind == "credit"
            )
        )
        recorded = await session.scalar(select(func.count()).where(OperatorAction.job_id == job.id))
    assert int(key["spent"]) == 0  # the debit is back in the key's budget
    assert credits == 1
    assert recorded == 1
