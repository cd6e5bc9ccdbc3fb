"""Upstream faults after the client paid: every case ends served or refunded, ledger balanced."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    MONEY_PATH,
    PRICE,
    REFUNDED_UPSTREAM_CHARGED,
    REFUNDED_UPSTREAM_NOT_CHARGED,
    UPSTREAM_PRICE,
    balances,
    change,
    db_rows,
    paid_post,
    poll_until_done,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free


@pytest.fixture(scope="module")
def fault_world(make_module_world: WorldMaker, module_db: str) -> World:
    """A world whose gateway gives up on the upstream quickly."""
    return make_module_world(
        job_delay_s=0.5,
        database_url=module_db,
        X402R_UPSTREAM_TIMEOUT_S="2",
        X402R_FACILITATOR_TIMEOUT_S="10",
        # The operator carries every failed job here (the default refunds only what the
        # upstream did not charge us): these tests are about serving or refunding.
        X402R_REFUND_POLICY="full",
        X402R_REFUNDS_PER_PAYER_PER_DAY="1000",
    )


@pytest.fixture
def world(fault_world: World) -> Iterator[World]:
    """The fault world with a clean upstream before and after each test."""
    yield from fault_free(fault_world)


async def run_paid(world: World) -> tuple[httpx.Response, dict[str, Any]]:
    """Pay for one edit and wait for the job to finish; returns (first answer, final job)."""
    response = await paid_post(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    body = response.json()
    job_id = body.get("jobId") or body.get("details", {}).get("jobId")
    assert job_id, body
    job = await poll_until_done(f"{world.gateway_url()}/v1/jobs/{job_id}", timeout=60)
    return response, job


async def wait_refunded(world: World, job_id: str) -> dict[str, Any]:
    """Long-poll until the refund of a failed job has settled."""
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(60):
            job: dict[str, Any] = (
                await http.get(f"{world.gateway_url()}/v1/jobs/{job_id}", params={"wait": 5})
            ).json()
            if job["state"] in ("refunded", "failed", "needs_attention"):
                return job
    raise AssertionError(f"{job_id} not resolved")


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"submit_5xx": True}, REFUNDED_UPSTREAM_CHARGED),
        ({"submit_5xx_before_settle": True}, REFUNDED_UPSTREAM_NOT_CHARGED),
        ({"submit_timeout": 4}, REFUNDED_UPSTREAM_CHARGED),
        ({"submit_malformed": True}, REFUNDED_UPSTREAM_CHARGED),
        ({"job_fails": "content policy violation"}, REFUNDED_UPSTREAM_CHARGED),
        ({"payment_loop": True}, REFUNDED_UPSTREAM_NOT_CHARGED),
    ],
    ids=["5xx-after-charge", "5xx-before-charge", "timeout", "malformed", "job-fails", "402-loop"],
)
async def test_upstream_failure_refunds_the_client(
    world: World, module_db: str, faults: dict[str, Any], expected: dict[int, int]
) -> None:
    world.set_faults(faults)
    before = balances(world, MONEY_PATH)

    _, job = await run_paid(world)
    job = await wait_refunded(world, job["jobId"])

    assert job["status"] == "failed"
    assert job["state"] == "refunded", job
    assert job["refund"]["amount"] == str(PRICE)
    assert job["refund"]["transaction"].startswith("0x")
    assert change(before, balances(world, MONEY_PATH)) == expected
    stats = world.upstream_stats()
    assert stats["paid_submits"] <= 1, stats  # never a second upstream payment
    sums = await audit(module_db, world.rpc_url, [job["jobId"]])
    assert sums["charge"] == PRICE
    assert sums["refund"] == PRICE
    assert sums["upstream"] == -expected[HOT_WALLET] - PRICE


async def test_one_shot_upstream_5xx_is_retried_with_the_same_payment(
    world: World, module_db: str
) -> None:
    world.set_faults({"submit_5xx_before_settle": {"times": 1}})
    before = balances(world, MONEY_PATH)

    response, job = await run_paid(world)

    assert response.status_code == 200
    assert job["status"] == "completed"
    assert change(before, balances(world, MONEY_PATH)) == {
        PAYER: -PRICE,
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    row, _ = await db_rows(module_db, job["jobId"])
    assert row.upstream_attempts == 2
    await audit(module_db, world.rpc_url, [job["jobId"]])


async def test_transient_status_faults_do_not_fail_the_job(world: World, module_db: str) -> None:
    world.set_faults({"status_5xx": {"times": 3}, "status_malformed": {"times": 2}})
    _, job = await run_paid(world)
    assert job["status"] == "completed", job
    await audit(module_db, world.rpc_url, [job["jobId"]])


async def test_price_above_ceiling_stops_selling_before_charging(world: World) -> None:
    # The cached quote still says 52700, so the first paid request buys at the old price and is
    # refused by the upstream (refunded); from then on the gateway knows and refuses to sell.
    world.set_faults({"price_atomic": 200_000})
    url = world.gateway_url() + "/v1/images/edit"
    first = await paid_post(url, key_hex(PAYER))
    if first.status_code == 200:
        await wait_refunded(world, first.json()["jobId"])
    before = balances(world, MONEY_PATH)

    payment = await sign_payment(url, key_hex(PAYER))
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(url, json=EDIT_BODY, headers=payment)

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "upstream_price_above_ceiling"
    assert change(before, balances(world, MONEY_PATH)) == dict.fromkeys(MONEY_PATH, 0)
