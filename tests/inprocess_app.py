"""The gateway app in-process (ASGI, real lifespan, SQLite in a temp dir), and what it serves."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text, update

from app.api.edits import EDIT_PATH, UPSTREAM_PATH
from app.api.fastpath import FastPath
from app.api.front import FastPathApp
from app.context import Gateway
from app.core.settings import Settings
from app.jobs.models import Job, JobState
from app.main import create_app
from sandbox.pay import EDIT_BODY
from tests.settings_factory import make_settings

PATHS = [EDIT_PATH, UPSTREAM_PATH]
BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36",
}
_X402_CONFIG = re.compile(r"window\.x402 = (\{.*?\});\s*</script>", re.S)


@asynccontextmanager
async def fast_and_slow(settings: Settings) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """(fast, slow), both started: the gateway as built, and the same gateway without its
    fast paths (the front and `FastPath`), whose answers the fast ones must equal."""
    fast, slow = create_app(settings), create_app(settings)
    fast_path: object = FastPath  # the middleware factory typing hides the class
    slow.user_middleware = [m for m in slow.user_middleware if m.cls is not fast_path]
    assert isinstance(slow, FastPathApp)
    slow.front = None
    async with fast.router.lifespan_context(fast), slow.router.lifespan_context(slow):
        yield fast, slow


async def start_app(
    tmp: Path, *, writes_jobs: bool = False, **overrides: Any
) -> AsyncIterator[FastAPI]:
    """The app on a SQLite file in `tmp`, no workers; it must write no job row unless the
    test `writes_jobs` itself (`insert_job`)."""
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'gateway.db'}",
        workers_enabled=False,
        facilitator_timeout_s=2,
        upstream_timeout_s=2,
        **overrides,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
        if not writes_jobs:
            assert await job_count(application) == 0


async def job_count(app: FastAPI) -> int:
    """Rows in the jobs table: a job row exists only once a payment verified."""
    gateway: Gateway = app.state.gateway
    async with gateway.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM jobs")) or 0)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    """An httpx client that calls `app` in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://internal:8080")


def x402_config(html: str) -> dict[str, Any]:
    """The configuration the SDK's paywall page embeds for its script."""
    found = _X402_CONFIG.search(html)
    assert found, "no window.x402 config in the page"
    config: dict[str, Any] = json.loads(found.group(1))
    return config


ROW: dict[str, Any] = {
    "route": EDIT_PATH,
    "request_body": EDIT_BODY,
    "fingerprint": "f" * 64,
    "x402_version": 2,
    "payer": "0x" + "1" * 40,
    "pay_network": "eip155:8453",
    "pay_asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    "pay_amount": 63240,
    "pay_to": "0x" + "3" * 40,
    "pay_valid_before": 2**40,
    "payment_payload": {"x402Version": 2},
    "payment_requirements": {"scheme": "exact"},
    "settle_tx": "0x" + "ab" * 32,
    "settle_attempts": 1,
    "upstream_attempts": 1,
    "upstream_status_url": "http://127.0.0.1:9/api/ai/generations/jobs/up1",
}


async def insert_job(app: FastAPI, state: JobState, payer: str | None = None) -> str:
    """A job row as the purchase flow leaves it, in `state` (paid by `payer`)."""
    gw: Gateway = app.state.gateway
    job_id = "job_" + secrets.token_urlsafe(18)
    now = datetime.now(UTC)
    # Polled "just now" and not due: nothing here may reach the (closed) upstream port.
    later = now + timedelta(days=1)
    job = Job(
        **{**ROW, "payer": payer or ROW["payer"]},
        id=job_id,
        state=state.value,
        pay_nonce="0x" + secrets.token_hex(32),
        last_polled_at=later,
        next_check_at=later,
        created_at=now,
    )
    async with gw.sessions() as session, session.begin():
        session.add(job)
    return job_id


async def complete(app: FastAPI, job_id: str) -> None:
    """What the poller stores when the upstream says completed."""
    gw: Gateway = app.state.gateway
    result = {"status": "completed", "images": [{"url": "https://cdn.test/a.png"}]}
    async with gw.sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=JobState.COMPLETED.value, result=result, finished_at=datetime.now(UTC))
        )
