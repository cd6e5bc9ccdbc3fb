"""What the growth run times on each database: status reads, the worker's claim, the summary.

One `Probe` per database, all open at once, so the sizes can be measured in interleaved
rounds (the machine's speed drifts; a ratio between sizes is only fair side by side).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.admin import summary_of
from app.core.db import create_engine, create_sessionmaker
from app.jobs import refund_limit
from app.jobs.models import Job, JobState
from app.jobs.repository import JobRepository
from app.jobs.status_reads import StatusReads
from app.jobs.workers import ACTIVE, BATCH, LEASE_S
from app.payments.pricing import format_usdc
from bench.growth_db import SizedDatabase


def _ms(seconds: float) -> float:
    return seconds * 1000.0


async def direct_summary(session: AsyncSession) -> dict[str, Any]:
    """The summary as it was computed before the rollups: aggregates over the whole tables."""
    repo = JobRepository(session)
    ledger = await repo.ledger_totals()
    states = await repo.count_by_state()
    parked = await repo.needing_attention()
    withheld = await refund_limit.withheld_count(session)
    return {
        "ledger": {k: str(v) for k, v in ledger.items()},
        "ledgerDisplay": {k: format_usdc(v) for k, v in ledger.items()},
        "jobsByState": dict(sorted(states.items())),
        "refundsWithheld": withheld,
        "needsAttention": [j.id for j in parked],
    }


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    return body | {"needsAttention": [j["jobId"] for j in body["needsAttention"]]}


@dataclass
class Probe:
    """Open connections to one database and the in-progress jobs to read."""

    db: SizedDatabase
    engine: AsyncEngine = field(init=False)
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    reads: StatusReads = field(init=False)
    in_progress: list[str] = field(default_factory=list)
    claim_sql: tuple[str, Any] | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # the reports' "now"

    async def open(self) -> Probe:
        """Connect, find the jobs in progress, warm the read pool."""
        self.engine = create_engine(self.db.url)
        self.sessions = create_sessionmaker(self.engine)
        self.reads = StatusReads(self.engine)
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._capture)
        async with self.engine.connect() as conn:
            stmt = select(Job.id).where(Job.state == JobState.SUBMITTED.value).order_by(Job.id)
            self.in_progress = list((await conn.execute(stmt)).scalars())
        for job_id in self.in_progress[:8]:
            await self.reads.fetch(job_id)
        return self

    def _capture(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "SKIP LOCKED" in statement:
            self.claim_sql = (statement, params)

    async def close(self) -> None:
        """Close every connection."""
        await self.reads.aclose()
        await self.engine.dispose()

    async def status_read(self, i: int) -> float:
        """Read the i-th job in progress by id (the gateway's cache-miss path); ms."""
        started = time.perf_counter()
        job = await self.reads.fetch(self.in_progress[i % len(self.in_progress)])
        elapsed = _ms(time.perf_counter() - started)
        assert job is not None
        return elapsed

    async def claim(self) -> float:
        """The worker's due-job claim (one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
        LOCKED) RETURNING`), rolled back; ms."""
        async with self.sessions() as session:
            await session.begin()
            started = time.perf_counter()
            jobs = await JobRepository(session).claim_due(ACTIVE, BATCH, LEASE_S)
            elapsed = _ms(time.perf_counter() - started)
            await session.rollback()
        assert jobs, "the seeded due jobs were not claimed"
        return elapsed

    async def explain_claim(self) -> dict[str, Any]:
        """EXPLAIN (ANALYZE, BUFFERS) of the claim exactly as the worker sends it."""
        if self.claim_sql is None:
            await self.claim()
        assert self.claim_sql is not None
        statement, params = self.claim_sql
        async with self.engine.connect() as conn:
            result = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            plan = [row[0] for row in result.all()]
            await conn.rollback()
        buffers = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", "\n".join(plan))
        pages = sum(int(g) for g in buffers.groups() if g) if buffers else 0
        return {"sql": statement, "plan": plan, "buffers": pages}

    async def summaries(self, count: int, *, fast: bool) -> list[float]:
        """`/v1/admin/summary`'s body: from the rollups (fast) or the old aggregates; ms."""
        out = []
        for _ in range(count):
            async with self.sessions() as session:
                started = time.perf_counter()
                await (summary_of(session) if fast else direct_summary(session))
                out.append(_ms(time.perf_counter() - started))
        return out

    async def summaries_agree(self) -> bool:
        """The fast summary answers exactly what the direct aggregates answer."""
        async with self.sessions() as session:
            fast = _comparable(await summary_of(session))
            direct = await direct_summary(session)
        return fast == direct


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
