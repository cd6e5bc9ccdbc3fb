"""API keys on a gateway that settles x402 payments after the upstream accepted: a key-paid
job has nothing to settle, so it completes (or is credited back) as in settle-first order."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.world import World
from tests.helpers import ADMIN_TOKEN, PRICE, poll_until_done
from tests.key_helpers import ENDED, key_jobs, key_post, key_view, new_key, wait_key_job_state
from tests.worlds import WorldMaker, fault_free


@pytest.fixture(scope="module")
def after_world(make_module_world: WorldMaker, module_db: str) -> World:
    """One gateway in settle-after order, with the admin API."""
    return make_module_world(
        job_delay_s=0.3,
        database_url=module_db,
        X402R_ADMIN_TOKEN=ADMIN_TOKEN,
        X402R_SETTLEMENT_ORDER="settle_after",
        X402R_UPSTREAM_TIMEOUT_S="3",
    )


@pytest.fixture
def world(after_world: World) -> Iterator[World]:
    """The module's world with a clean upstream before and after each test."""
    yield from fault_free(after_world)


async def test_a_key_paid_job_completes_without_a_settlement(world: World, module_db: str) -> None:
    key_id, secret = await new_key(world, budget=2 * PRICE)
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await key_post(http, world, secret)
    assert answer.status_code == 200, answer.text
    assert "PAYMENT-RESPONSE" not in answer.headers
    job = await poll_until_done(answer.json()["statusUrl"])
    assert job["status"] == "completed", job
    assert job["payment"]["transaction"] is None
    assert await key_jobs(module_db, key_id) == 1
    assert (await key_view(world, key_id))["spent"] == str(PRICE)


async def test_a_failed_key_paid_job_is_credited_back(world: World, module_db: str) -> None:
    key_id, secret = await new_key(world, budget=PRICE)
    world.set_faults({"submit_5xx_before_settle": True})
    async with httpx.AsyncClient(timeout=60) as http:
        await key_post(http, world, secret)
    _, state = await wait_key_job_state(module_db, key_id, ENDED)
    assert state == "refunded"
    view = await key_view(world, key_id)
    assert (view["spent"], view["credited"], view["ledgerAgrees"]) == ("0", str(PRICE), True)
