"""Status reads: one statement for the columns a job's view shows, on a small pool of their own.

A status read is one `SELECT` by primary key, outside any transaction. Through the engine's
pool it would also pay the pre-ping on checkout (`BEGIN`, `;`, `ROLLBACK`) and SQLAlchemy's
per-row work, three to four times the query itself; on Postgres it gets a plain asyncpg
pool instead (same connection arguments as the engine). Other databases use the engine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm.instrumentation import manager_of_class

from app.core.db_errors import connection_broken
from app.jobs.models import Job
from app.keys.models import ApiKey

# Only what `job_view` shows (and when it was last polled): payloads stay in the database.
VIEW_COLUMNS = (
    Job.id,
    Job.state,
    Job.upstream_request_id,
    Job.result,
    Job.error_code,
    Job.error_message,
    Job.payer,
    Job.pay_amount,
    Job.pay_asset,
    Job.pay_network,
    Job.x402_version,
    Job.settle_tx,
    Job.refund_amount,
    Job.refund_tx,
    Job.created_at,
    Job.finished_at,
    Job.last_polled_at,
    Job.next_check_at,  # when a pending refund is tried next
    Job.api_key_id,  # paid with a key: shown as such
)
# The secret hash of the key that bought the job, when that key keeps its jobs to itself:
# a read must then present the key (compared with the hash, no further query).
OWNER = "owner_hash"
_OWNER = (
    select(ApiKey.secret_hash)
    .where(ApiKey.id == Job.api_key_id, ApiKey.own_jobs_only)
    .scalar_subquery()
    .label(OWNER)
)
_SELECT = select(*VIEW_COLUMNS, _OWNER).where(Job.id == bindparam("job_id"))
_SELECT_PG = (
    "SELECT "
    + ", ".join(c.key for c in VIEW_COLUMNS)
    + f", (SELECT k.secret_hash FROM api_keys k WHERE k.id = jobs.api_key_id"
    f" AND k.own_jobs_only) AS {OWNER} FROM jobs WHERE id = $1"
)
# SQLAlchemy's own options in the engine's connect arguments, not asyncpg's.
_ENGINE_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn")
POOL_SIZE = 8
_JOBS = manager_of_class(Job)


async def _decode_json(conn: Any) -> None:
    """JSON columns as Python values, as SQLAlchemy's `JSON` type gives them."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _loaded(values: dict[str, Any]) -> Job:
    """A detached `Job` holding `values` as loaded (not as changed) attributes.

    As the ORM's own loader does: values go into the instance's dict, with no change
    history; `Job(**values)` would record each as a change, at fifteen times the cost.
    """
    job: Job = _JOBS.new_instance()
    job.__dict__.update(values)
    return job


class StatusReads:
    """Reads jobs by id for their view; `aclose()` when the application stops.

    The jobs come back detached and partly loaded: only the view's columns are set.
    """

    def __init__(self, engine: AsyncEngine, pool_size: int = POOL_SIZE) -> None:
        self._engine = engine
        self._pool_size = pool_size
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self.postgres = engine.dialect.driver == "asyncpg"

    async def fetch(self, job_id: str) -> Job | None:
        """`job_id` with its view columns, or None when there is no such job."""
        found = await self.fetch_owned(job_id)
        return None if found is None else found[0]

    async def fetch_owned(self, job_id: str) -> tuple[Job, str | None] | None:
        """`job_id` with its view columns and the hash of the only key that may read it
        (None: readable by its id), or None when there is no such job."""
        values = await self._values(job_id)
        if values is None:
            return None
        owner = values.pop(OWNER, None)
        return _loaded(values), owner

    async def _values(self, job_id: str) -> dict[str, Any] | None:
        if not self.postgres:
            async with self._engine.connect() as conn:
                row = (await conn.execute(_SELECT, {"job_id": job_id})).first()
            return None if row is None else dict(row._mapping)
        pool = self._pool or await self._open()
        async with pool.acquire() as conn:
            try:
                record = await conn.fetchrow(_SELECT_PG, job_id)
            except Exception as exc:
                if connection_broken(exc):
                    conn.terminate()  # the pool opens a fresh one in its place
                raise
        return None if record is None else dict(record)

    async def _open(self) -> Any:
        async with self._opening:
            if self._pool is None:
                args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
                for key in _ENGINE_ONLY:
                    kwargs.pop(key, None)
                self._pool = await asyncpg.create_pool(
                    *args, **kwargs, min_size=1, max_size=self._pool_size, init=_decode_json
                )
        return self._pool

    async def aclose(self) -> None:
        """Close the pool, if one was opened."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
