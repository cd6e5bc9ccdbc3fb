"""`GET /v1/jobs/{id}`: our job, refreshed from the upstream at most once per interval."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from app.api.deps import GatewayDep, PollerDep
from app.core.errors import NotFound
from app.jobs.models import FINAL_STATES, Job, JobState
from app.jobs.repository import JobRepository
from app.jobs.views import job_view

router = APIRouter(tags=["jobs"])

JobId = Annotated[str, Path(min_length=8, max_length=40, pattern=r"^job_[A-Za-z0-9_-]+$")]


async def _read(gw: GatewayDep, job_id: str) -> Job:
    async with gw.sessions() as session:
        job = await JobRepository(session).get(job_id)
    if job is None:
        raise NotFound("no such job", code="job_not_found")
    return job


@router.get("/v1/jobs/{job_id}", summary="Job status, result, payment and refund")
async def get_job(
    job_id: JobId,
    gw: GatewayDep,
    poller: PollerDep,
    wait: Annotated[float, Query(ge=0, le=120, description="Long-poll up to N seconds")] = 0,
) -> JSONResponse:
    """Poll a job; `?wait=N` returns as soon as it finishes (capped by the server)."""
    job = await _read(gw, job_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, gw.settings.max_wait_s)
    while True:
        if job.state == JobState.SUBMITTED.value:
            await poller.refresh(job_id)
            job = await _read(gw, job_id)
        remaining = deadline - loop.time()
        if job.state in FINAL_STATES or remaining <= 0:
            break
        await asyncio.sleep(min(gw.settings.poll_interval_s / 2, remaining))
        job = await _read(gw, job_id)
    headers = {"Cache-Control": "no-store"}
    if job.state in FINAL_STATES:
        headers = {"Cache-Control": "private, max-age=31536000, immutable"}
    return JSONResponse(job_view(job, gw.settings.base_url), headers=headers)
