"""The rollups' migration on a full database while a writer keeps writing jobs and ledger rows.

The writer does what the paid path does to these tables, one short transaction at a time:
a new job with its charge, then the job finished with its upstream payment. Each write's
latency is recorded, first for a few seconds alone (the baseline), then while `alembic
upgrade head` runs in another process; the worst one during the migration is its stall.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.bulk_seed import COLUMNS, LEDGER_COLUMNS, make_job
from bench.growth_db import SizedDatabase
from bench.growth_measure import percentile

ROOT = Path(__file__).resolve().parent.parent
BASELINE_S = 3.0
PAUSE_S = 0.005  # between two writes
_INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})"
)
_INSERT_LEDGER = (
    f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(LEDGER_COLUMNS)))})"
)
_FINISH = (
    "UPDATE jobs SET state = 'completed', next_check_at = NULL, finished_at = now(), "
    "updated_at = now() WHERE id = $1"
)
_MIGRATE = (
    "import sys, time; from app.core.migrate import upgrade_to_head; "
    "t = time.perf_counter(); upgrade_to_head(sys.argv[1]); print(time.perf_counter() - t)"
)


class Writer:
    """Writes until stopped; `latencies` holds (when, ms) for every committed write."""

    def __init__(self, db: SizedDatabase) -> None:
        self.db = db
        self.latencies: list[tuple[float, float]] = []
        self.stop = asyncio.Event()
        self.count = db.size

    async def run(self) -> None:
        """Write, pause, write… until `stop` is set."""
        conn = await asyncpg.connect(self.db.dsn)
        rng = random.Random(self.db.size)
        try:
            while not self.stop.is_set():
                job, ledger, _ = make_job(rng, self.count, self.count + 1, datetime.now(UTC))
                self.count += 1
                charge, upstream = ledger[0], ledger[1]
                await self._timed(conn, [(_INSERT_JOB, job), (_INSERT_LEDGER, charge)])
                await self._timed(conn, [(_FINISH, (job[0],)), (_INSERT_LEDGER, upstream)])
                await asyncio.sleep(PAUSE_S)
        finally:
            await conn.close()

    async def _timed(self, conn: Any, statements: list[tuple[str, Any]]) -> None:
        started = time.perf_counter()
        async with conn.transaction():
            for sql, args in statements:
                await conn.execute(sql, *args)
        self.latencies.append((started, (time.perf_counter() - started) * 1000.0))

    def window(self, since: float, until: float) -> list[float]:
        """Latencies (ms) of the writes started in [since, until)."""
        return [ms for at, ms in self.latencies if since <= at < until]


def _stats(latencies: list[float]) -> dict[str, float]:
    return {
        "writes": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=0.0),
    }


async def migrate_under_writes(db: SizedDatabase) -> dict[str, Any]:
    """Run the migration to head while the writer writes; timings and the writer's stalls."""
    writer = Writer(db)
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.sleep(0.5)  # connected and writing
        baseline_from = time.perf_counter()
        await asyncio.sleep(BASELINE_S)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATE,
            db.url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        ended = time.perf_counter()
        if proc.returncode != 0:
            raise RuntimeError(f"migration failed: {err.decode()[-2000:]}")
        await asyncio.sleep(0.5)  # a few writes after it, counted by the triggers
    finally:
        writer.stop.set()
        await task
    during = writer.window(started, ended)
    return {
        "migration_s": float(out.decode().strip().splitlines()[-1]),
        "process_s": ended - started,
        "writer_alone": _stats(writer.window(baseline_from, started)),
        "writer_during": _stats(during),
        "writes_total": len(writer.latencies),
    }
