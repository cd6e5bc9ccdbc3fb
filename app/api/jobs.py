"""`GET /v1/jobs/{id}`: our job, refreshed from the upstream at most once per interval.

Reads go through `app.api.job_reads`: immutable jobs are answered from memory with a strong
ETag (`If-None-Match` → 304) and `Cache-Control: immutable`; jobs in progress cost at most
one database read per half poll interval per process, whoever polls them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response

from app.api.deps import GatewayDep
from app.api.job_cache import Rendered, etag_matches
from app.api.job_reads import JobReads, job_reads
from app.api.read_proof import HEADER, ReadProofs, ensure_payer
from app.api.schemas import JobDocument
from app.core.errors import NotFound
from app.jobs.views import JOBS_PREFIX

router = APIRouter(tags=["jobs"])

JOB_ID_PATTERN = r"^job_[A-Za-z0-9_-]+$"
JOB_ID_MIN, JOB_ID_MAX = 8, 40
JobId = Annotated[str, Path(min_length=JOB_ID_MIN, max_length=JOB_ID_MAX, pattern=JOB_ID_PATTERN)]


async def get_reads(request: Request) -> JobReads:
    """The process-wide job read path (built once the lifespan has run)."""
    reads = job_reads(request.app)
    assert reads is not None, "the lifespan has not built the gateway"
    return reads


ReadsDep = Annotated[JobReads, Depends(get_reads)]


async def _read(reads: JobReads, job_id: str, authorization: str | None) -> Rendered:
    rendered = await reads.read(job_id)
    # A job its key keeps to itself is, to anyone else, a job that does not exist.
    if rendered is None or not rendered.readable_with(authorization):
        raise NotFound("no such job", code="job_not_found")
    return rendered


def answer(rendered: Rendered, if_none_match: str | None) -> Response:
    """200 with the rendered job, or 304 when the client already holds these bytes."""
    if etag_matches(if_none_match, rendered.etag):
        return rendered.not_modified()
    return rendered.response()


@router.get(
    JOBS_PREFIX + "{job_id}",
    summary="Job status, result, payment and refund",
    responses={
        200: {
            "model": JobDocument,
            "description": "The job (`ETag` and `immutable` once it can no longer change)",
        },
        304: {"description": "Unchanged since the `If-None-Match` ETag"},
        401: {"description": "Payer-bound reads: no valid sign-in-with-x proof (challenge)"},
        403: {"description": "Payer-bound reads: the proof is not the payer's"},
        404: {"description": "No such job (`job_not_found`)"},
    },
)
async def get_job(
    job_id: JobId,
    gw: GatewayDep,
    reads: ReadsDep,
    wait: Annotated[float, Query(ge=0, le=120, description="Long-poll up to N seconds")] = 0,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    sign_in_with_x: Annotated[
        str | None,
        Header(alias=HEADER, description="Payer-bound reads: the payer's signed challenge"),
    ] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Poll a job; `?wait=N` returns as soon as it finishes (capped by the server)."""
    reader = None
    if gw.settings.payer_bound_reads:  # proven before the job is looked up
        reader = await ReadProofs(gw.settings).reader(job_id, sign_in_with_x)
    rendered = await _read(reads, job_id, authorization)
    if reader is not None:
        ensure_payer(reader, rendered.payer)
    waited = await reads.waits.wait(job_id, rendered, min(wait, gw.settings.max_wait_s))
    if waited is None:  # the watch could not read the job: read it here (errors included)
        waited = await _read(reads, job_id, authorization)
    return answer(waited, if_none_match)
