"""Operator job endpoints: filtered, paginated lists, one job's money trail, retry and refund."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.api.admin import AdminDep
from app.api.deps import GatewayDep
from app.core.db import transaction
from app.operator import actions
from app.operator.jobs import JobFilter, job_summary, job_trail, list_jobs

router = APIRouter(tags=["operator"])


class ActionRequest(BaseModel):
    """Why the operator acts (kept with the action), and optionally who."""

    reason: str = Field(min_length=1, max_length=actions.MAX_REASON)
    actor: str | None = Field(None, max_length=80)


@router.get("/v1/admin/jobs", summary="Jobs, newest first, filtered and paginated")
async def jobs(
    gw: GatewayDep,
    _: AdminDep,
    state: str | None = None,
    key: Annotated[str | None, Query(description="An API key's id or name")] = None,
    payer: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: Annotated[str | None, Query(description="A job id, payer or tx hash")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`nextCursor` of the page before")] = None,
) -> dict[str, Any]:
    """One page of jobs; follow `nextCursor` (null on the last page)."""
    f = JobFilter(state, key, payer, since, until, q)
    async with gw.sessions() as session:
        page = await list_jobs(session, f, limit=limit, cursor=cursor)
    order = gw.settings.settlement_order
    return {
        "jobs": [job_summary(job, order) for job in page.jobs],
        "nextCursor": page.next_cursor,
    }


@router.get("/v1/admin/jobs/{job_id}", summary="A job and its full money trail")
async def job(gw: GatewayDep, _: AdminDep, job_id: str) -> dict[str, Any]:
    """Every ledger row (with its tx hash), key-ledger row and operator action of the job."""
    async with gw.sessions() as session:
        return await job_trail(session, job_id, gw.settings.settlement_order)


def _actor(body: ActionRequest) -> str:
    return f"admin-api:{body.actor}" if body.actor else "admin-api"


@router.post("/v1/admin/jobs/{job_id}/retry", summary="Resume a parked job where it is safe")
async def retry(gw: GatewayDep, _: AdminDep, job_id: str, body: ActionRequest) -> dict[str, Any]:
    """409 `job_not_retryable` / `job_not_parked` when a retry is not safe for this job."""
    async with transaction(gw.sessions) as session:
        await actions.retry(
            session,
            job_id,
            reason=body.reason,
            actor=_actor(body),
            order=gw.settings.settlement_order,
        )
    async with gw.sessions() as session:
        return await job_trail(session, job_id, gw.settings.settlement_order)


@router.post("/v1/admin/jobs/{job_id}/refund", summary="Refund a parked, charged job")
async def refund(gw: GatewayDep, _: AdminDep, job_id: str, body: ActionRequest) -> dict[str, Any]:
    """The job moves to `refunding`; the worker signs and sends the refund and records it."""
    async with transaction(gw.sessions) as session:
        await actions.refund(session, job_id, reason=body.reason, actor=_actor(body))
    async with gw.sessions() as session:
        return await job_trail(session, job_id, gw.settings.settlement_order)
