"""The database goes away under paid traffic (a private cluster, stopped and started again).

While it is unreachable every answer is a JSON 503 with Retry-After (or a success), never a
bare 500 nor a dropped connection; a client charged meanwhile gets its job by retrying the
same payment; and an upstream purchase accepted while the database restarts is kept.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.world import HOT_WALLET, OPERATOR, PAYER, PAYER_2, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    db_rows,
    moved,
    poll_until_done,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.private_postgres import PrivatePostgres, private_postgres
from tests.worlds import WorldMaker

OUTAGE_S = 5.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    """A Postgres cluster of this module's own, to stop and start."""
    yield from private_postgres()


@pytest.fixture(scope="module")
def world(make_module_world: WorldMaker, cluster: PrivatePostgres) -> World:
    """A gateway whose database is the private cluster (short leases keep the test short)."""
    return make_module_world(
        job_delay_s=0.5,
        database_url=cluster.url(),
        X402R_FACILITATOR_TIMEOUT_S="5",
        X402R_UPSTREAM_TIMEOUT_S="10",
    )


def _acceptable(response: httpx.Response) -> str | None:
    """Why `response` is not a success nor a JSON 503 with Retry-After (None: it is fine)."""
    if response.status_code in (200, 304):
        return None
    if response.status_code == 404 and response.json().get("error") == "job_not_found":
        return None  # the unknown job read when the database is up
    if response.status_code != 503:
        return f"{response.status_code} {response.headers.get('content-type')}: {response.text}"
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"503 not JSON: {response.text}"
    if "retry-after" not in response.headers:
        return f"503 without Retry-After: {response.text}"
    return None


async def _read_loop(urls: list[str], stop: asyncio.Event, seen: list[Any]) -> None:
    """Status reads (plain and long-polling) of `urls`, which grows as jobs are accepted."""
    async with httpx.AsyncClient(timeout=30) as http:
        while not stop.is_set():
            for url in list(urls):
                for params in ({}, {"wait": 1}):
                    try:
                        seen.append(await http.get(url, params=params))
                    except httpx.TransportError as exc:
                        seen.append(exc)
            await asyncio.sleep(0.1)


async def test_outage_answers_503_and_charged_clients_get_their_jobs(
    world: World, cluster: PrivatePostgres
) -> None:
    url = world.gateway_url() + "/v1/images/edit"
    before = balances(world)
    async with httpx.AsyncClient(timeout=60) as http:
        payment = await sign_payment(url, key_hex(PAYER))
        first = await http.post(url, json=EDIT_BODY, headers=payment)
    assert first.status_code == 200, first.text
    payers = [PAYER if i % 2 else PAYER_2 for i in range(12)]
    bodies = [{**EDIT_BODY, "prompt": f"outage request {i}"} for i in range(12)]
    payments = [await sign_payment(url, key_hex(p), b) for p, b in zip(payers, bodies, strict=True)]
    unknown_job = world.gateway_url() + "/v1/jobs/job_" + secrets.token_urlsafe(18)
    reads: list[Any] = []
    stop_reading = asyncio.Event()

    read_urls = [first.json()["statusUrl"], unknown_job]

    async def paid(i: int) -> httpx.Response | Exception:
        await asyncio.sleep(0.4 * i)
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                response = await http.post(url, json=bodies[i], headers=payments[i])
        except httpx.TransportError as exc:
            return exc
        if response.status_code == 200:  # a job in progress: read it during the outage too
            read_urls.append(response.json()["statusUrl"])
        return response

    async def outage() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(cluster.stop)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(cluster.start)

    reader = asyncio.create_task(_read_loop(read_urls, stop_reading, reads))
    down = asyncio.create_task(outage())
    answers = await asyncio.gather(*(paid(i) for i in range(12)))
    await down
    stop_reading.set()
    await reader

    problems = [_acceptable(r) if isinstance(r, httpx.Response) else repr(r) for r in answers]
    problems += [_acceptable(r) if isinstance(r, httpx.Response) else repr(r) for r in reads]
    assert [p for p in problems if p] == []
    assert any(isinstance(r, httpx.Response) and r.status_code == 503 for r in answers)
    assert any(isinstance(r, httpx.Response) and r.status_code == 503 for r in reads)
    for answer in [*answers, *reads]:
        if isinstance(answer, httpx.Response) and answer.status_code == 503:
            assert answer.json()["error"] in ("database_unavailable", "payment_in_progress")

    # The database is back: every client retries the same payment until it has its job.
    job_ids = [first.json()["jobId"]]
    async with httpx.AsyncClient(timeout=60) as http:
        for i, answer in enumerate(answers):
            response = answer
            deadline = asyncio.get_running_loop().time() + 60
            while not isinstance(response, httpx.Response) or response.status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, response
                if isinstance(response, httpx.Response):
                    assert _acceptable(response) is None, response.text
                    await asyncio.sleep(min(float(response.headers["retry-after"]), 3))
                response = await http.post(url, json=bodies[i], headers=payments[i])
            job_ids.append(response.json()["jobId"])
    assert len(set(job_ids)) == 13
    for job_id in job_ids:
        done = await poll_until_done(f"{world.gateway_url()}/v1/jobs/{job_id}", timeout=60)
        assert done["status"] == "completed", done
    assert moved(world, before) == {
        PAYER: -7 * PRICE,
        PAYER_2: -6 * PRICE,
        OPERATOR: 13 * PRICE,
        HOT_WALLET: -13 * UPSTREAM_PRICE,
        UPSTREAM_PAYEE: 13 * UPSTREAM_PRICE,
    }
    sums = await audit(world.database_url, world.rpc_url, job_ids)
    assert sums == {
        "charge": 13 * PRICE,
        "upstream": 13 * UPSTREAM_PRICE,
        "refund": 0,
        "margin": 13 * (PRICE - UPSTREAM_PRICE),
    }


async def test_upstream_answer_is_kept_while_the_database_restarts(
    world: World, cluster: PrivatePostgres
) -> None:
    world.reset_upstream()
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": "accepted upstream while the database restarts"}
    payment = await sign_payment(url, key_hex(PAYER), body)
    before = balances(world)
    # The upstream takes our payment, then holds its answer 3 s: the database stops then.
    world.set_faults({"submit_timeout": {"times": 1, "value": 3}})

    async with httpx.AsyncClient(timeout=60) as http:
        request = asyncio.create_task(http.post(url, json=body, headers=payment))
        for _ in range(100):
            if world.upstream_stats()["paid_submits"] == 1:
                break
            await asyncio.sleep(0.05)
        assert world.upstream_stats()["paid_submits"] == 1
        await asyncio.to_thread(cluster.stop)
        await asyncio.sleep(OUTAGE_S)  # the answer arrives while the database is down
        await asyncio.to_thread(cluster.start)
        response = await request

    assert response.status_code == 200, response.text
    job_id = response.json()["jobId"]
    done = await poll_until_done(response.json()["statusUrl"], timeout=60)
    assert done["status"] == "completed", done
    assert world.upstream_stats()["paid_submits"] == 1  # paid once, never resent
    job, ledger = await db_rows(world.database_url, job_id)
    assert job.refund_amount is None
    assert job.refund_tx is None
    assert [(row.kind, row.amount) for row in ledger] == [
        ("charge", PRICE),
        ("upstream", UPSTREAM_PRICE),
    ]
    assert moved(world, before) == {
        PAYER: -PRICE,
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    await audit(world.database_url, world.rpc_url, [job_id])
