"""Jobs written straight into the database, cloned from a real paid job so rows are realistic."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job, JobState

BATCH = 1000


def _result(job_id: str, upstream: str) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "status": "completed",
        "requestId": job_id,
        "images": [
            {
                "url": f"{upstream}/files/{job_id}.png",
                "content_type": "image/png",
                "file_name": f"{job_id}.png",
                "width": 1024,
                "height": 1024,
            }
        ],
        "description": "A cyberpunk portrait of the cat with neon rim light.",
    }


async def insert_copies(
    database_url: str, template_id: str, copies: list[Callable[[str, datetime], dict[str, Any]]]
) -> list[str]:
    """Insert one copy of job `template_id` per entry of `copies`, each under a new id and
    payment nonce, with the columns that entry gives (from the new id and now); their ids."""
    engine = create_async_engine(database_url)
    ids: list[str] = []
    try:
        async with engine.begin() as conn:
            row = (await conn.execute(select(Job.__table__).where(Job.id == template_id))).one()
            template = dict(row._mapping)
            now = datetime.now(UTC)
            rows = []
            for columns in copies:
                job_id = "job_" + secrets.token_urlsafe(18)
                rows.append(
                    {
                        **template,
                        "id": job_id,
                        "pay_nonce": "0x" + secrets.token_hex(32),
                        "idempotency_key": None,
                        **columns(job_id, now),
                    }
                )
                ids.append(job_id)
            for start in range(0, len(rows), BATCH):
                await conn.execute(insert(Job), rows[start : start + BATCH])
    finally:
        await engine.dispose()
    return ids


async def clone_jobs(
    database_url: str, template_id: str, count: int, *, state: JobState, upstream: str
) -> list[str]:
    """Insert `count` copies of job `template_id` in `state`; returns their ids.

    Completed copies carry an upstream-like result. Copies in progress look polled just now
    and not due for a check, so neither readers nor workers ask the upstream about them.
    """

    def columns(job_id: str, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {"state": state.value, "upstream_job_id": job_id}
        if state is JobState.COMPLETED:
            values["result"] = _result(job_id, upstream)
            values["finished_at"] = now
            values["next_check_at"] = None
        else:
            values["last_polled_at"] = now + timedelta(days=1)
            values["next_check_at"] = now + timedelta(days=1)
        return values

    return await insert_copies(database_url, template_id, [columns] * count)


async def job_row(database_url: str, job_id: str) -> dict[str, Any]:
    """One job row as a dict."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(Job.__table__).where(Job.id == job_id))).one()
    finally:
        await engine.dispose()
    return dict(row._mapping)


async def park_jobs(database_url: str, ids: list[str]) -> None:
    """Mark jobs in progress as polled and not due for a day, so nobody polls them meanwhile."""
    later = datetime.now(UTC) + timedelta(days=1)
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(Job).where(Job.id.in_(ids)).values(last_polled_at=later, next_check_at=later)
            )
    finally:
        await engine.dispose()
