"""Job rows written straight into a running app's database, as the purchase flow leaves them."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import update

from app.api.edits import EDIT_PATH
from app.context import Gateway
from app.jobs.models import Job, JobState
from sandbox.pay import EDIT_BODY

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


async def insert_job(app: FastAPI, state: JobState) -> str:
    """A job row as the purchase flow leaves it, in `state`."""
    gw: Gateway = app.state.gateway
    job_id = "job_" + secrets.token_urlsafe(18)
    now = datetime.now(UTC)
    # Polled "just now" and not due: nothing here may reach the (closed) upstream port.
    later = now + timedelta(days=1)
    job = Job(
        **ROW,
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
