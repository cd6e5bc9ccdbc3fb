"""A status read never moves money: it records what the upstream said; a worker refunds.

The gateway under test runs without workers. Its clients read a job whose upstream failed
for several poll intervals: the job stays in progress and nobody is refunded. A second
gateway with workers then fails the job and refunds the client from what the read recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import PRICE, UPSTREAM_PRICE, balances, db_rows, moved, paid_post

POLL_INTERVAL_S = 0.5
BOUGHT_NOT_REFUNDED = {
    PAYER: -PRICE,
    OPERATOR: PRICE,
    HOT_WALLET: -UPSTREAM_PRICE,
    UPSTREAM_PAYEE: UPSTREAM_PRICE,
}
REFUNDED = {OPERATOR: PRICE, HOT_WALLET: -UPSTREAM_PRICE - PRICE, UPSTREAM_PAYEE: UPSTREAM_PRICE}


@pytest.fixture(scope="module")
def world(module_db: str) -> Iterator[World]:
    """One gateway that only serves requests (no workers)."""
    w = World(
        database_url=module_db,
        job_delay_s=0.2,
        gateway_env={"X402R_WORKERS_ENABLED": "false", "X402R_REFUND_POLICY": "full"},
    )
    try:
        w.start()
        yield w
    finally:
        w.stop()


async def test_a_read_records_the_failure_and_a_worker_refunds(
    world: World, module_db: str
) -> None:
    world.set_faults({"job_fails": "content policy violation"})
    before = balances(world)
    answer = await paid_post(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["jobId"]

    # Reads over several poll intervals: each may ask the upstream, which answers "failed".
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(8):
            seen = (await http.get(f"{world.gateway_url()}/v1/jobs/{job_id}")).json()
            assert seen["state"] == "submitted", seen
            assert "refund" not in seen, seen
            await asyncio.sleep(POLL_INTERVAL_S)

    job, ledger = await db_rows(module_db, job_id)
    assert job.state == "submitted"
    assert job.result is not None
    assert job.result["status"] == "failed"
    assert job.refund_tx is None
    assert job.refund_amount is None
    assert job.error_code is None
    assert [row.kind for row in ledger] == ["charge", "upstream"]
    assert moved(world, before) == BOUGHT_NOT_REFUNDED

    # A replica with workers acts on what the read recorded.
    world.start_gateway(1, extra_env={"X402R_WORKERS_ENABLED": "true"})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        job, ledger = await db_rows(module_db, job_id)
        if job.state == "refunded":
            break
        assert loop.time() < deadline, job.state
        await asyncio.sleep(0.2)
    assert job.error_code == "upstream_job_failed"
    assert job.error_message == "content policy violation"
    assert job.refund_amount == PRICE
    assert job.refund_tx is not None
    assert [row.kind for row in ledger] == ["charge", "upstream", "refund"]
    assert moved(world, before) == REFUNDED
