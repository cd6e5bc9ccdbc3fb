"""API-key helpers the tests share: keys made through the admin API or the service, key-paid
requests and jobs, and what the database says about a key's jobs."""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.core.db import create_sessionmaker, transaction
from app.jobs import admission
from app.jobs.key_purchase import key_paid_job
from app.jobs.models import Job
from app.keys import service
from app.keys.auth import KeyCaller
from sandbox.world import World
from tests.helpers import ADMIN_TOKEN, EDIT_BODY, PRICE, UPSTREAM_PRICE
from tests.settings_factory import make_settings

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRETS: list[str] = []  # every key made in this test session: none may show up in a log
ENDED = frozenset({"refunded", "failed", "needs_attention"})  # a failed job's last states


def edit_url(world: World, replica: int = 0) -> str:
    """The paid edit route of gateway replica `replica`."""
    return world.gateway_url(replica) + "/v1/images/edit"


async def new_key(world: World, **limits: Any) -> tuple[str, str]:
    """(id, secret) of a key created through the admin API."""
    body = {"name": f"team-{time.monotonic_ns()}", **limits}
    async with httpx.AsyncClient(timeout=30) as http:
        created = await http.post(world.gateway_url() + "/v1/admin/keys", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    SECRETS.append(created.json()["secret"])
    return created.json()["key"]["id"], created.json()["secret"]


async def key_view(world: World, key_id: str, replica: int = 0) -> dict[str, Any]:
    """The key as `GET /v1/admin/keys/{id}` shows it (limits, spend, ledgerAgrees)."""
    async with httpx.AsyncClient(timeout=30) as http:
        shown = await http.get(
            f"{world.gateway_url(replica)}/v1/admin/keys/{key_id}", headers=ADMIN
        )
    assert shown.status_code == 200, shown.text
    view: dict[str, Any] = shown.json()
    return view


async def key_post(
    http: httpx.AsyncClient,
    world: World,
    secret: str,
    replica: int = 0,
    body: dict[str, Any] | None = None,
    **headers: str,
) -> httpx.Response:
    """A paid edit request, paid with the key `secret`."""
    headers["Authorization"] = f"Bearer {secret}"
    return await http.post(edit_url(world, replica), json=body or EDIT_BODY, headers=headers)


async def scalar(database_url: str, sql: str, **params: Any) -> int:
    """One number read straight from the database."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(text(sql), params) or 0)
    finally:
        await engine.dispose()


async def key_jobs(database_url: str, key_id: str) -> int:
    """How many jobs the key bought."""
    return await scalar(database_url, "SELECT count(*) FROM jobs WHERE api_key_id = :k", k=key_id)


async def wait_key_job_state(
    database_url: str, key_id: str, states: frozenset[str]
) -> tuple[str, str]:
    """(id, state) of the key's (one) job once it is in one of `states`."""
    for _ in range(120):
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text("SELECT id, state FROM jobs WHERE api_key_id = :k"), {"k": key_id}
                    )
                ).first()
        finally:
            await engine.dispose()
        if row is not None and row.state in states:
            return row.id, row.state
        await asyncio.sleep(0.5)
    raise AssertionError(f"no job of {key_id} reached {states}")


def fresh_rate_window() -> None:
    """Start in a fresh minute, so a fixed window cannot roll over mid-test."""
    if time.time() % 60 > 40:
        time.sleep(61 - time.time() % 60)


async def poll_with_key(http: httpx.AsyncClient, url: str, secret: str) -> None:
    """Long-poll a job that only its key may read until it leaves `processing`."""
    for _ in range(30):
        job = await http.get(url, params={"wait": 5}, headers={"Authorization": f"Bearer {secret}"})
        if job.json()["status"] != "processing":
            return
    raise AssertionError(f"{url} still processing")


async def create_key_in(engine: AsyncEngine, **limits: Any) -> tuple[dict[str, Any], str]:
    """(view, secret) of a key made by the service, as the CLI and the admin API do."""
    new = service.NewKey(name=limits.pop("name", "team-" + os.urandom(4).hex()), **limits)
    async with transaction(create_sessionmaker(engine)) as session:
        return await service.create_key(session, new)


async def record_key_job(engine: AsyncEngine, key_id: str, amount: int = PRICE) -> Job:
    """Record one key-paid job the way a request does (debit, cap, job, ledger, PAID)."""
    gw: Any = SimpleNamespace(engine=engine, settings=make_settings())
    caller = KeyCaller(key_id, "sale", None, False)
    job = key_paid_job(gw, caller, "/v1/images/edit", {"prompt": "p"}, amount, "f" * 64, None)
    return await admission.record_key_paid(gw, job, UPSTREAM_PRICE)
