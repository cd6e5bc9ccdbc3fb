"""X402R_DAILY_UPSTREAM_CAP_ATOMIC: when the upstream spend cap is reached, nothing is sold.

The cap is read before the payment is verified, then reserved atomically when the job is
recorded, before the client is charged: a request that finds no room gets 503 and nothing
moves, even while another request's reservation is still settling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job, SpendHour
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, PAYER_2, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    moved,
    poll_until_done,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker

CAP = UPSTREAM_PRICE + UPSTREAM_PRICE // 2  # room for one upstream purchase a day


@pytest.fixture(scope="module")
def cap_world(make_module_world: WorldMaker, module_db: str) -> World:
    """A gateway allowed one upstream purchase per day."""
    return make_module_world(
        remote_facilitator=True,  # so the sandbox facilitator's faults reach the gateway
        job_delay_s=0.3,
        database_url=module_db,
        X402R_DAILY_UPSTREAM_CAP_ATOMIC=str(CAP),
    )


@pytest.fixture
def world(cap_world: World) -> Iterator[World]:
    """Each test starts on a new day: no upstream spend counted yet."""
    asyncio.run(_sql(cap_world.database_url, delete(SpendHour)))
    cap_world.reset_facilitator()
    yield cap_world
    cap_world.reset_facilitator()


async def _sql(database_url: str, stmt: object) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(stmt)  # type: ignore[call-overload]
    finally:
        await engine.dispose()


async def _spent(database_url: str) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            total = (await conn.execute(select(func.sum(SpendHour.amount)))).scalar_one()
    finally:
        await engine.dispose()
    return int(total or 0)


async def _jobs(database_url: str) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(Job))).scalar_one())
    finally:
        await engine.dispose()


async def _recorded(database_url: str, count: int, within_s: float = 30) -> int:
    """Wait until `count` jobs are recorded (a loaded machine may take a while)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while (jobs := await _jobs(database_url)) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{jobs} jobs, not {count}"
        await asyncio.sleep(0.05)
    return jobs


async def _pay(world: World, payer: int, prompt: str) -> httpx.Response:
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": prompt}
    headers = await sign_payment(url, key_hex(payer), body)
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(url, json=body, headers=headers)


async def test_cap_reached_refuses_before_charging(world: World) -> None:
    before = balances(world)
    first = await _pay(world, PAYER, "first edit of the day")
    assert first.status_code == 200, first.text
    assert (await poll_until_done(first.json()["statusUrl"]))["status"] == "completed"
    jobs = await _jobs(world.database_url)

    second = await _pay(world, PAYER, "second edit of the day")

    assert second.status_code == 503, second.text
    assert second.json()["error"] == "daily_spend_cap_reached"
    assert await _jobs(world.database_url) == jobs  # refused before anything was recorded
    assert moved(world, before) == {
        PAYER: -PRICE,
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    assert await _spent(world.database_url) == UPSTREAM_PRICE
    await audit(world.database_url, world.rpc_url)


async def test_a_reservation_in_flight_turns_the_next_client_away_uncharged(
    world: World,
) -> None:
    before = balances(world)
    # The first request's settlement answer is held back for 2 s (after its transfer). Its
    # job reserved the cap's only room when it was recorded, before settling: the second
    # request, meanwhile, is told 503 before it is charged.
    world.set_facilitator_faults({"settle_timeout": {"times": 1, "value": 2}})
    jobs = await _jobs(world.database_url)
    slow = asyncio.create_task(_pay(world, PAYER, "slow edit"))
    jobs = await _recorded(world.database_url, jobs + 1)  # slow's job holds the room now
    fast = await _pay(world, PAYER_2, "fast edit")
    late = await slow

    assert fast.status_code == 503, fast.text
    assert fast.json()["error"] == "daily_spend_cap_reached"
    assert "PAYMENT-RESPONSE" not in fast.headers
    assert await _jobs(world.database_url) == jobs  # nothing recorded for it
    assert late.status_code == 200, late.text
    assert (await poll_until_done(late.json()["statusUrl"]))["status"] == "completed"
    assert moved(world, before) == {
        PAYER: -PRICE,
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    assert await _spent(world.database_url) == UPSTREAM_PRICE
    await audit(world.database_url, world.rpc_url)
