"""settle_after with one funded balance: it buys one job, never five.

A payer holding exactly one price sends five payments at once, spread over two replicas.
With the default limit (one unsettled job per payer) one job is bought and charged, the
others are turned away before anything is bought. With the limit lifted, every unsettled job
whose payment is refused is parked for the operator and never shows its images.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job
from sandbox.chain import usdc_balance
from sandbox.world import HOT_WALLET, OPERATOR, UPSTREAM_PAYEE, World, address
from tests.helpers import ADMIN_TOKEN, EDIT_BODY, PRICE, UPSTREAM_PRICE, funded_payer, sign_payment
from tests.ledger_audit import audit
from tests.worlds import WorldMaker

PAYMENTS = 5
FINAL = ("completed", "failed", "payment_failed", "refunded", "needs_attention")


@pytest.fixture(scope="module")
def world(make_module_world: WorldMaker, module_db: str) -> World:
    """Two settle-after replicas on one database."""
    return make_module_world(
        gateways=2,
        job_delay_s=0.5,
        database_url=module_db,
        X402R_SETTLEMENT_ORDER="settle_after",
        X402R_UPSTREAM_TIMEOUT_S="10",
        X402R_FACILITATOR_TIMEOUT_S="10",
        X402R_ADMIN_TOKEN=ADMIN_TOKEN,
    )


def restart(world: World, env: dict[str, str]) -> None:
    """Restart both replicas with `env` on top of the module's."""
    for index in range(2):
        world.gateways[index].stop()
        world.start_gateway(index, extra_env=env)


def chain_state(world: World, payer: str) -> dict[str, int]:
    """Balances of the payer and of the operator's three parties."""
    who = {"payer": payer} | {
        name: address(i)
        for name, i in (("operator", OPERATOR), ("hot", HOT_WALLET), ("upstream", UPSTREAM_PAYEE))
    }
    return {name: usdc_balance(world.rpc_url, addr) for name, addr in who.items()}


async def pay_five(world: World, key: str) -> list[httpx.Response]:
    """Five payments by one payer, signed first, then sent at once over both replicas."""
    urls = [world.gateway_url(i % 2) + "/v1/images/edit" for i in range(PAYMENTS)]
    bodies = [{**EDIT_BODY, "prompt": f"edit number {i}"} for i in range(PAYMENTS)]
    signed = [await sign_payment(u, key, b) for u, b in zip(urls, bodies, strict=True)]
    async with httpx.AsyncClient(timeout=60) as http:
        return list(
            await asyncio.gather(
                *(
                    http.post(u, json=b, headers=h)
                    for u, b, h in zip(urls, bodies, signed, strict=True)
                )
            )
        )


async def jobs_of(database_url: str, payer: str) -> list[Any]:
    """Every job row of `payer`."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(select(Job).where(Job.payer == payer))).all())
    finally:
        await engine.dispose()


async def settled_down(database_url: str, payer: str, timeout: float = 60) -> list[Any]:
    """The payer's jobs once every one of them reached a final state."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await jobs_of(database_url, payer)
        if all(r.state in FINAL for r in rows):
            return rows
        assert loop.time() < deadline, [(r.state, r.error_code) for r in rows]
        await asyncio.sleep(0.3)


async def view(world: World, job_id: str, replica: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        got: dict[str, Any] = (
            await http.get(f"{world.gateway_url(replica)}/v1/jobs/{job_id}")
        ).json()
        return got


async def admin_summary(world: World) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(
            world.gateway_url() + "/v1/admin/summary",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert answer.status_code == 200, answer.text
    summary: dict[str, Any] = answer.json()
    return summary


async def test_one_balance_buys_one_job_across_two_replicas(world: World) -> None:
    world.reset_upstream()
    # The upstream takes our payment, then needs 2 s to answer: every job stays unsettled
    # that long, so all five requests arrive while the first one is in flight.
    world.set_faults({"submit_timeout": {"times": PAYMENTS, "value": 2}})
    key, payer = funded_payer(world, PRICE)
    before = chain_state(world, payer)

    answers = await pay_five(world, key)

    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * (PAYMENTS - 1), [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["error"] == "unsettled_payment_in_flight", refused.text
        assert "PAYMENT-RESPONSE" not in refused.headers
    [row] = await settled_down(world.database_url, payer)  # only one job was ever recorded
    assert row.state == "completed", (row.state, row.error_code)
    assert row.settle_tx is not None
    assert world.upstream_stats()["paid_submits"] == 1
    after = chain_state(world, payer)
    assert {k: after[k] - before[k] for k in after} == {
        "payer": -PRICE,
        "operator": PRICE,
        "hot": -UPSTREAM_PRICE,
        "upstream": UPSTREAM_PRICE,
    }
    await audit(world.database_url, world.rpc_url)


async def test_unsettled_jobs_show_no_images_and_refused_ones_are_parked(world: World) -> None:
    """With the limit lifted to five, the hole itself: no free results, losses visible."""
    restart(world, {"X402R_SETTLE_AFTER_MAX_UNSETTLED_PER_PAYER": str(PAYMENTS)})
    world.reset_upstream()
    world.set_faults({"submit_timeout": {"times": PAYMENTS, "value": 2}})
    key, payer = funded_payer(world, PRICE)
    before = chain_state(world, payer)

    answers = await pay_five(world, key)
    rows = await settled_down(world.database_url, payer)
    await asyncio.sleep(1.5)  # longer than an upstream job takes: pollers had their chance
    views = [await view(world, r.id, i % 2) for i, r in enumerate(rows)]
    retries = [await view(world, r.id, (i + 1) % 2) for i, r in enumerate(rows)]
    summary = await admin_summary(world)

    bought = world.upstream_stats()["paid_submits"]
    assert len(rows) == PAYMENTS
    charged = [r for r in rows if r.settle_tx is not None]
    assert len(charged) == 1, [(r.state, r.error_code) for r in rows]
    unpaid = [r for r in rows if r.settle_tx is None]
    served = [a for a in answers if "PAYMENT-RESPONSE" in a.headers]
    assert len(served) == 1
    for r, v, again in zip(rows, views, retries, strict=True):
        if r.settle_tx is None:
            assert r.state != "completed", (r.state, r.error_code)
            assert "images" not in v, v
            assert "images" not in again, again
    # Every unsettled job the upstream was paid for is parked and shown to the operator.
    bought_unpaid = [r for r in unpaid if r.upstream_tx is not None]
    assert len(bought_unpaid) == bought - 1
    for r in bought_unpaid:
        assert r.state == "needs_attention", (r.state, r.error_code)
        assert r.error_code == "client_payment_refused_after_purchase", r.error_code
    parked = {p["jobId"]: p for p in summary["needsAttention"]}
    for r in bought_unpaid:
        assert parked[r.id]["error"]["code"] == "client_payment_refused_after_purchase"
        assert parked[r.id]["settleTx"] is None
    after = chain_state(world, payer)
    assert {k: after[k] - before[k] for k in after} == {
        "payer": -PRICE,
        "operator": PRICE,
        "hot": -bought * UPSTREAM_PRICE,
        "upstream": bought * UPSTREAM_PRICE,
    }
    await audit(world.database_url, world.rpc_url)
