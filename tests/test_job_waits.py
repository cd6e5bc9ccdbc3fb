"""Long polls (`?wait=N`): one watch per job whatever the number of waiters, answered at once
when the job finishes, and the same answers as FastAPI's own route gives.

The poll interval is long (4 s, so a watch re-reads every 2 s): an answer that comes sooner
came from the job's shared watch being told, not from a waiter's own timer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.api import request_metrics
from app.api.job_reads import JobReads, job_reads
from app.api.job_waits import TIMER_STEP_S
from app.jobs.models import JobState
from tests.inprocess_app import complete, fast_and_slow, insert_job
from tests.settings_factory import make_settings

POLL_INTERVAL_S = 4.0
WAITERS = 60


@pytest.fixture(scope="module")
async def apps(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """(fast, slow): the gateway, and the same gateway without its fast paths."""
    db = Path(tmp_path_factory.mktemp("job-waits")) / "gateway.db"
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        workers_enabled=False,
        poll_interval_s=POLL_INTERVAL_S,
        max_wait_s=10,
    )
    async with fast_and_slow(settings) as both:
        yield both


def _reads(app: FastAPI) -> JobReads:
    reads = job_reads(app)
    assert reads is not None
    return reads


async def _get(app: FastAPI, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
        response = await http.get(path)
    return response.status_code, response.headers.raw, response.content


async def test_many_waiters_share_one_watch_and_are_answered_when_the_job_completes(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    fast, _ = apps
    reads = _reads(fast)
    job_id = await insert_job(fast, JobState.SUBMITTED)
    waiters = [asyncio.create_task(_get(fast, f"/v1/jobs/{job_id}?wait=8")) for _ in range(WAITERS)]
    await asyncio.sleep(0.3)
    assert len(reads.waits) == 1, "one watch for the job, not one per waiter"
    reads_before = reads.db_reads
    loop = asyncio.get_running_loop()
    await complete(fast, job_id)
    started = loop.time()
    reads.waits.refreshed(job_id)  # what the worker's poller says after polling the job
    answers = await asyncio.gather(*waiters)
    assert loop.time() - started < 1.0, "answered by the watch, not by a timer"
    assert {(status, json.loads(body)["status"]) for status, _, body in answers} == {
        (200, "completed")
    }
    assert reads.db_reads - reads_before <= 2, "one re-read for every waiter"
    assert len(reads.waits) == 0


async def test_a_waiter_gets_the_job_as_it_is_when_the_wait_ends(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    fast, slow = apps
    job_id = await insert_job(fast, JobState.SUBMITTED)
    answers = await asyncio.gather(
        _get(fast, f"/v1/jobs/{job_id}?wait=0.5"), _get(slow, f"/v1/jobs/{job_id}?wait=0.5")
    )
    assert answers[0] == answers[1]
    assert json.loads(answers[0][2])["status"] == "processing"
    assert len(_reads(fast).waits) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/job_doesnotexist?wait=1",  # 404 from the route
        "/v1/jobs/nojob?wait=1",  # 422: not a job id
        "/v1/jobs/job_toolong" + "x" * 40 + "?wait=1",  # 422: too long
        "/v1/jobs/{done}?wait=121",  # 422: over the route's bound
        "/v1/jobs/{done}?wait=3",  # finished: answered at once
        "/v1/jobs/{done}?wait=3&wait=4",  # not the fast path's query
    ],
)
async def test_long_poll_answers_are_the_routes_own(
    apps: tuple[FastAPI, FastAPI], path: str
) -> None:
    fast, slow = apps
    done = await insert_job(fast, JobState.SUBMITTED)
    await complete(fast, done)
    url = path.format(done=done)
    assert await _get(fast, url) == await _get(slow, url)


@pytest.mark.parametrize("headers", [{"Origin": "https://app.example"}, {"If-None-Match": "*"}])
async def test_long_poll_answers_with_cors_and_etags_are_the_routes_own(
    apps: tuple[FastAPI, FastAPI], headers: dict[str, str]
) -> None:
    fast, slow = apps
    done = await insert_job(fast, JobState.SUBMITTED)
    await complete(fast, done)
    answers = []
    for app in (fast, slow):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
            response = await http.get(f"/v1/jobs/{done}?wait=3", headers=headers)
        answers.append((response.status_code, response.headers.raw, response.content))
    assert answers[0] == answers[1]


async def test_a_waiter_is_answered_at_its_deadline_not_before(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    """Deadlines share one timer per step (`TIMER_STEP_S`): never early, at most a step late,
    and a waiter that went away (cancelled) leaves its job's watch."""
    fast, _ = apps
    job_id = await insert_job(fast, JobState.SUBMITTED)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await _get(fast, f"/v1/jobs/{job_id}?wait=0.3")
    took = loop.time() - started
    assert json.loads(answer[2])["status"] == "processing"
    assert 0.3 <= took < 0.3 + TIMER_STEP_S + 0.5
    gone = asyncio.create_task(_get(fast, f"/v1/jobs/{job_id}?wait=8"))
    await asyncio.sleep(0.2)
    assert len(_reads(fast).waits) == 1
    gone.cancel()
    await asyncio.sleep(0.1)
    assert len(_reads(fast).waits) == 0, "the watch ends with its last waiter"


async def test_long_polls_are_counted_as_the_route_counts_them(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    """The front counts a long poll where it answers (no `send` wrapper while it waits): the
    same route, method and status as the app without its fast paths counts."""
    done = await insert_job(apps[0], JobState.SUBMITTED)
    await complete(apps[0], done)
    in_progress = await insert_job(apps[0], JobState.SUBMITTED)
    _, headers, _ = await _get(apps[0], f"/v1/jobs/{done}")
    etag = dict(headers)[b"etag"].decode()
    counted = []
    for app in apps:
        before = dict(request_metrics._answers)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
            for path in (done, in_progress, "job_doesnotexist", "nojob"):
                await http.get(f"/v1/jobs/{path}?wait=0.2")
            await http.get(f"/v1/jobs/{done}?wait=1", headers={"If-None-Match": etag})
        after = request_metrics._answers
        counted.append(
            {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}
        )
    assert counted[0] == counted[1]
    route = request_metrics.JOB_ROUTE
    assert counted[0] == {
        (route, "GET", 200): 2,
        (route, "GET", 304): 1,
        (route, "GET", 404): 1,
        (route, "GET", 422): 1,
    }
