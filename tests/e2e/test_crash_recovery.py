"""kill -9 of the gateway at each state transition, then restart: nothing lost or paid twice."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    MONEY_PATH,
    PRICE,
    REFUNDED_UPSTREAM_CHARGED,
    SERVED,
    UPSTREAM_PRICE,
    balances,
    change,
    payment_nonce,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker

# The upstream took our payment but its answer died with us: resending the same authorization
# is refused (already used), so the client is refunded and the operator carries the loss.
REFUNDED = REFUNDED_UPSTREAM_CHARGED


@pytest.fixture(scope="module")
def crash_world(make_module_world: WorldMaker, module_db: str) -> World:
    """A world whose gateway we kill and restart."""
    return make_module_world(
        job_delay_s=0.5,
        database_url=module_db,
        X402R_FACILITATOR_TIMEOUT_S="3",
        X402R_UPSTREAM_TIMEOUT_S="2",
        # The operator carries every failed job here: these tests are about resuming refunds.
        X402R_REFUND_POLICY="full",
        X402R_REFUNDS_PER_PAYER_PER_DAY="1000",
    )


async def _job_by_nonce(database_url: str, nonce: str) -> Job | None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(Job).where(Job.pay_nonce == nonce))).first()
    finally:
        await engine.dispose()
    return row  # type: ignore[return-value]


async def _wait_final(database_url: str, nonce: str, timeout: float = 60) -> Job:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        job = await _job_by_nonce(database_url, nonce)
        if job is not None and job.state in ("completed", "refunded", "failed", "needs_attention"):
            return job
        await asyncio.sleep(0.5)
    raise AssertionError(f"job for nonce {nonce} not resolved: {job and job.state}")


@pytest.mark.parametrize(
    ("point", "final_state", "expected"),
    [
        ("after_verify", "completed", SERVED),
        ("after_settle", "completed", SERVED),
        ("after_upstream_signed", "completed", SERVED),
        ("after_upstream_submit", "refunded", REFUNDED),
        ("after_refund_signed", "refunded", None),
    ],
)
async def test_kill_at_each_step_then_restart_resolves_the_job(
    crash_world: World,
    module_db: str,
    point: str,
    final_state: str,
    expected: dict[int, int] | None,
) -> None:
    world = crash_world
    world.reset_upstream()
    if point == "after_refund_signed":
        world.set_faults({"job_fails": "upstream rejected the edit"})
        expected = {
            PAYER: 0,
            OPERATOR: PRICE,
            HOT_WALLET: -UPSTREAM_PRICE - PRICE,
            UPSTREAM_PAYEE: UPSTREAM_PRICE,
        }
    url = world.gateway_url() + "/v1/images/edit"
    world.gateways[0].stop()
    world.start_gateway(0, extra_env={"X402R_TEST_CRASH_AT": point})
    before = balances(world, MONEY_PATH)
    payment = await sign_payment(url, key_hex(PAYER))

    async with httpx.AsyncClient(timeout=30) as http:
        if point == "after_refund_signed":
            accepted = await http.post(url, json=EDIT_BODY, headers=payment)
            assert accepted.status_code == 200, accepted.text
            # The refund starts when the poll sees the upstream job fail; the crash kills us then.
            for _ in range(40):
                try:
                    await http.get(accepted.json()["statusUrl"], params={"wait": 1})
                except httpx.TransportError:
                    break
        else:
            with pytest.raises(httpx.TransportError):
                await http.post(url, json=EDIT_BODY, headers=payment)
    assert world.gateways[0].proc is not None
    assert world.gateways[0].proc.wait(10) == -9  # it really died by SIGKILL

    world.start_gateway(0)  # same database, no crash point: the recovery worker takes over
    job = await _wait_final(module_db, payment_nonce(payment))

    assert job.state == final_state, (job.state, job.error_code, job.error_message)
    assert change(before, balances(world, MONEY_PATH)) == expected
    stats = world.upstream_stats()
    assert stats["paid_submits"] <= 1, stats
    sums = await audit(module_db, world.rpc_url, [job.id])
    assert sums["charge"] == PRICE

    if final_state == "completed":  # a retry of the same payment gets the same job
        async with httpx.AsyncClient(timeout=30) as http:
            again = await http.post(url, json=EDIT_BODY, headers=payment)
        assert again.status_code == 200, again.text
        assert again.json()["jobId"] == job.id
