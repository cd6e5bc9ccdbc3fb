"""Routes of the simulated upstream for benchmarks that need many jobs in progress at once.

- ``POST /_sim/jobs {"count": N}``: N jobs created without payment, ``processing`` until
  told otherwise; answers ``[{jobId, requestId, statusUrl}]``.
- ``POST /_sim/jobs/finish {"ids": [...], "spread_s": S}``: those jobs complete one after
  the other over the next S seconds; answers ``{"completesAt": {jobId: epoch seconds}}``.
- ``GET /_sim/status_times``: when (epoch seconds) each job's status was asked for.
- ``POST /_sim/config {"job_delay_s": S}``: paid jobs complete S seconds after submission.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from sandbox.sim_images import Job

if TYPE_CHECKING:
    from sandbox.upstream_sim import SimState

JOBS_PATH = "/api/ai/generations/jobs"
FOREVER_S = 10.0**9  # a job created this far in the future stays `processing`


def install_bench_routes(app: FastAPI, sim: SimState) -> None:
    """Add the benchmark routes to the simulated upstream's `app`."""

    @app.post("/_sim/jobs")
    async def create_jobs(request: Request) -> list[dict[str, Any]]:
        count = int((await request.json())["count"])
        created = []
        for _ in range(count):
            job = Job(
                job_id=uuid.uuid4().hex,
                request_id=str(uuid.uuid4()),
                prompt="benchmark job",
                aspect_ratio=None,
                sync_mode=False,
                created=time.monotonic() + FOREVER_S,
                failure=None,
            )
            sim.jobs[job.job_id] = job
            url = f"{sim.config.base_url}{JOBS_PATH}/{job.job_id}"
            created.append({"jobId": job.job_id, "requestId": job.request_id, "statusUrl": url})
        return created

    @app.post("/_sim/jobs/finish")
    async def finish_jobs(request: Request) -> dict[str, Any]:
        body = await request.json()
        ids: list[str] = body["ids"]
        spread = float(body.get("spread_s", 0))
        now_mono, now_wall = time.monotonic(), time.time()
        completes = {}
        for i, job_id in enumerate(ids):
            offset = spread * i / max(1, len(ids))
            # `status()` says completed once `job_delay_s` has passed since `created`.
            sim.jobs[job_id].created = now_mono + offset - sim.config.job_delay_s
            completes[job_id] = now_wall + offset
        return {"completesAt": completes}

    @app.post("/_sim/config")
    async def configure(request: Request) -> dict[str, float]:
        delay = float((await request.json())["job_delay_s"])
        if delay < 0:
            raise ValueError("job_delay_s must not be negative")
        sim.config.job_delay_s = delay
        return {"job_delay_s": delay}

    @app.get("/_sim/status_times")
    async def status_times() -> dict[str, list[float]]:
        return sim.status_times
