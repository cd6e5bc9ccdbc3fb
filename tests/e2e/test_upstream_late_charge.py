"""An upstream that answers 500 without settling our payment, then cashes it later.

Our signed upstream authorization stays executable until its `validBefore`. A refund decided
while it is still live ("the chain shows it unused") can be followed by the upstream
executing it: the operator pays the upstream and refunds the client. The gateway decides
only once the authorization has expired: used → the job fails unrefunded (under the default
policy), unused → the client is refunded, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from x402.http import decode_payment_signature_header
from x402.schemas import PaymentRequiredV1

from app.jobs.models import Job
from sandbox.world import EDIT_PATH, PAYER, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    MONEY_PATH,
    PRICE,
    REFUNDED_UPSTREAM_NOT_CHARGED,
    SERVED,
    balances,
    change,
    db_rows,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free

VALIDITY_S = 30  # X402R_UPSTREAM_AUTH_VALIDITY_S: how long our upstream payment can be cashed
FINAL = ("refunded", "failed", "needs_attention", "completed")


@pytest.fixture(scope="module")
def late_world(make_module_world: WorldMaker, module_db: str) -> World:
    return make_module_world(
        job_delay_s=0.3,
        database_url=module_db,
        X402R_UPSTREAM_TIMEOUT_S="10",
        X402R_FACILITATOR_TIMEOUT_S="10",
        X402R_UPSTREAM_AUTH_VALIDITY_S=str(VALIDITY_S),
    )


@pytest.fixture
def world(late_world: World) -> Iterator[World]:
    yield from fault_free(late_world)


async def failed_purchase(world: World, module_db: str) -> str:
    """Pay for an edit whose upstream answers 500 to every paid submit (nothing settled);
    the job's id once the gateway has given up buying it."""
    world.set_faults({"submit_5xx_before_settle": True})
    url = world.gateway_url() + "/v1/images/edit"
    payment = await sign_payment(url, key_hex(PAYER))
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(url, json=EDIT_BODY, headers=payment)
    body = answer.json()
    job_id = str(body.get("jobId") or body["details"]["jobId"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        job, _ = await db_rows(module_db, job_id)
        if job.state not in ("paid", "upstream_signed", "verified"):
            break
        assert loop.time() < deadline, job.state
        await asyncio.sleep(0.3)
    world.reset_upstream()
    return job_id


async def cash_upstream_authorization(world: World, job: Job) -> None:
    """Do what the upstream can: settle our stored authorization through its facilitator."""
    assert job.upstream_payment_header is not None
    payload = decode_payment_signature_header(job.upstream_payment_header)
    async with httpx.AsyncClient(timeout=60) as http:
        unpaid = await http.post(world.upstream_base + EDIT_PATH, json=EDIT_BODY)
        requirements = PaymentRequiredV1.model_validate(unpaid.json()).accepts[0]
        settled = await http.post(
            world.facilitator_url + "/settle",
            json={
                "x402Version": 1,
                "paymentPayload": payload.model_dump(mode="json", by_alias=True, exclude_none=True),
                "paymentRequirements": requirements.model_dump(
                    mode="json", by_alias=True, exclude_none=True
                ),
            },
        )
    assert settled.status_code == 200, settled.text
    assert settled.json()["success"] is True, settled.text


async def final_view(world: World, job_id: str, timeout: float) -> dict[str, Any]:
    """Long-poll the job until its state can no longer change."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            job: dict[str, Any] = (
                await http.get(f"{world.gateway_url()}/v1/jobs/{job_id}", params={"wait": 5})
            ).json()
            if job["state"] in FINAL:
                return job
            assert loop.time() < deadline, job
            await asyncio.sleep(0.5)


async def test_upstream_cashing_our_authorization_late_gets_no_refund(
    world: World, module_db: str
) -> None:
    """The attack: 500 without settling, then the upstream executes our authorization before
    it expires. The client must not be refunded: the operator paid the upstream."""
    before = balances(world, MONEY_PATH)
    job_id = await failed_purchase(world, module_db)
    job, _ = await db_rows(module_db, job_id)
    assert job.state == "refunding", (job.state, job.error_code)  # decided only after expiry
    assert job.refund_tx is None
    await cash_upstream_authorization(world, job)

    view = await final_view(world, job_id, timeout=VALIDITY_S + 60)

    assert (view["state"], view["error"]["code"]) == ("failed", "upstream_charged_late"), view
    assert "refund" not in view, view
    assert change(before, balances(world, MONEY_PATH)) == SERVED  # the upstream kept 52,700
    _, rows = await db_rows(module_db, job_id)
    assert sorted((r.kind, r.amount) for r in rows) == [("charge", PRICE), ("upstream", 52700)]
    await audit(module_db, world.rpc_url, [job_id])


async def test_an_upstream_that_never_cashes_it_is_refunded_after_expiry(
    world: World, module_db: str
) -> None:
    """The honest case: nobody executes our authorization; once it expired, the client is
    refunded exactly once."""
    before = balances(world, MONEY_PATH)
    job_id = await failed_purchase(world, module_db)
    async with httpx.AsyncClient(timeout=30) as http:
        pending = (await http.get(f"{world.gateway_url()}/v1/jobs/{job_id}")).json()
    assert pending["refund"]["status"] == "pending", pending
    assert pending["refund"]["nextAttemptAt"] is not None, pending

    view = await final_view(world, job_id, timeout=VALIDITY_S + 60)

    assert view["state"] == "refunded", view
    assert view["refund"]["status"] == "refunded"
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_NOT_CHARGED
    _, rows = await db_rows(module_db, job_id)
    assert sorted((r.kind, r.amount) for r in rows) == [("charge", PRICE), ("refund", PRICE)]
    await audit(module_db, world.rpc_url, [job_id])
