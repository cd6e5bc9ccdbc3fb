"""Two gateway replicas on one Postgres: one payment buys one job however it is replayed,
upstream polling is coalesced across replicas, and idempotency keys (header or the x402
payment-identifier extension) are scoped to the payer.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    append_payment_identifier_to_extensions,
)
from x402.http import (
    decode_payment_required_header,
    encode_payment_signature_header,
)
from x402.schemas import PaymentPayload, PaymentRequired

from app.jobs.models import FINAL_STATES, Job, LedgerEntry
from sandbox.chain import authorization_state
from sandbox.pay import payer_client
from sandbox.world import (
    HOT_WALLET,
    OPERATOR,
    PAYER,
    PAYER_2,
    UPSTREAM_PAYEE,
    World,
    key_hex,
)
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    moved,
    payer_and_nonce,
    poll_until_done,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker

POLL_INTERVAL_S = 0.5
FINAL = {state.value for state in FINAL_STATES}
OTHER_BODY = {**EDIT_BODY, "prompt": "a watercolor fox"}


@pytest.fixture(scope="module")
def world(make_module_world: WorldMaker, module_db: str) -> World:
    """Two replicas sharing one database and one facilitator."""
    return make_module_world(
        gateways=2,
        remote_facilitator=True,
        job_delay_s=1.0,
        database_url=module_db,
        X402R_POLL_INTERVAL_S=str(POLL_INTERVAL_S),
        X402R_FACILITATOR_TIMEOUT_S="10",
        X402R_UPSTREAM_TIMEOUT_S="10",
    )


def edit_url(world: World, replica: int) -> str:
    """The edit endpoint of one replica."""
    return world.gateway_url(replica) + "/v1/images/edit"


def served(jobs: int, payer: int = PAYER) -> dict[int, int]:
    """Balance changes of `jobs` completed edits paid by `payer`."""
    return {
        payer: -jobs * PRICE,
        OPERATOR: jobs * PRICE,
        HOT_WALLET: -jobs * UPSTREAM_PRICE,
        UPSTREAM_PAYEE: jobs * UPSTREAM_PRICE,
    }


def outcome(response: httpx.Response) -> tuple[int, str | None]:
    """(status, error code) of an answer; the code is None for a 200."""
    if response.status_code == 200:
        return 200, None
    try:
        return response.status_code, str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.status_code, response.text[:60]


def paid_attempts(stats: dict[str, Any]) -> int:
    """Upstream submissions that carried a payment (quotes are the unpaid ones)."""
    return int(stats["submits"]) - int(stats["payment_required"])


async def sign_with_payment_id(url: str, key: str, payment_id: str | None) -> dict[str, str]:
    """A v2 payment whose payload carries the payment-identifier extension (when given)."""
    async with httpx.AsyncClient(timeout=30) as http:
        unpaid = await http.post(url, json=EDIT_BODY)
    assert unpaid.status_code == 402, unpaid.text
    required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    assert isinstance(required, PaymentRequired)
    extensions = dict(required.extensions or {})
    if payment_id is not None:
        append_payment_identifier_to_extensions(extensions, payment_id)
    payload = await payer_client(key).create_payment_payload(required, extensions=extensions)
    assert isinstance(payload, PaymentPayload)
    if payment_id is not None:  # the SDK carries the extensions over into the payload
        assert payload.extensions is not None
        assert payload.extensions[PAYMENT_IDENTIFIER]["info"]["id"] == payment_id
    return {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}


async def post(
    url: str,
    payment: dict[str, str],
    body: dict[str, Any] | None = None,
    key: str | None = None,
) -> httpx.Response:
    """One paid POST (optionally with an Idempotency-Key)."""
    headers = {**payment, **({"Idempotency-Key": key} if key else {})}
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(url, json=body or EDIT_BODY, headers=headers)


async def served_job(url: str, payment: dict[str, str], **kwargs: Any) -> str:
    """POST until answered (an unknown settlement is retried with the same payment)."""
    for _ in range(10):
        response = await post(url, payment, **kwargs)
        if response.status_code == 200:
            return str(response.json()["jobId"])
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "payment_outcome_unknown", response.text
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    raise AssertionError(f"payment never served: {response.text}")


async def completed(world: World, job_id: str, replica: int = 0) -> dict[str, Any]:
    """Long-poll a job to the end; it must complete."""
    job = await poll_until_done(f"{world.gateway_url(replica)}/v1/jobs/{job_id}", timeout=60)
    assert job["status"] == "completed", job
    return job


async def rows(module_db: str, *where: Any) -> list[Any]:
    """Job rows matching `where`."""
    engine = create_async_engine(module_db)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(select(Job).where(*where))).all())
    finally:
        await engine.dispose()


async def final_rows(module_db: str, job_ids: list[str], timeout: float = 60) -> list[Any]:
    """The jobs' rows once every one of them has reached a final state (in `job_ids` order)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = {row.id: row for row in await rows(module_db, Job.id.in_(job_ids))}
        if len(found) == len(set(job_ids)) and all(r.state in FINAL for r in found.values()):
            return [found[job_id] for job_id in job_ids]
        assert loop.time() < deadline, {r.id: r.state for r in found.values()}
        await asyncio.sleep(0.3)


async def ledger_kinds(module_db: str, job_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
    """(kind, amount) ledger rows per job."""
    engine = create_async_engine(module_db)
    try:
        async with engine.connect() as conn:
            stmt = (
                select(LedgerEntry.job_id, LedgerEntry.kind, LedgerEntry.amount)
                .where(LedgerEntry.job_id.in_(job_ids))
                .order_by(LedgerEntry.id)
            )
            out: dict[str, list[tuple[str, int]]] = {job_id: [] for job_id in job_ids}
            for row in (await conn.execute(stmt)).all():
                out[row.job_id].append((row.kind, row.amount))
            return out
    finally:
        await engine.dispose()


async def test_one_payment_replayed_100_times_on_two_replicas_buys_one_job(
    world: World, module_db: str
) -> None:
    payment = await sign_payment(edit_url(world, 0), key_hex(PAYER))
    payer, nonce = payer_and_nonce(payment)
    before = balances(world)
    stats_before = world.upstream_stats()

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        answers = await asyncio.gather(
            *(
                http.post(edit_url(world, i % 2), json=EDIT_BODY, headers=payment)
                for i in range(100)
            )
        )

    outcomes = Counter(outcome(a) for a in answers)
    ok = [a.json()["jobId"] for a in answers if a.status_code == 200]
    assert ok, outcomes
    job_id = ok[0]
    assert set(ok) == {job_id}
    # Anything but the job is at most "retry with the same payment": never a fresh 402 (the
    # client would pay twice), never another job, never an unexplained error.
    assert set(outcomes) <= {(200, None), (503, "payment_outcome_unknown")}, outcomes
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json().get("details", {}).get("jobId", job_id) == job_id
    assert await served_job(edit_url(world, 1), payment) == job_id
    await completed(world, job_id, replica=1)

    [row] = await rows(module_db, Job.payer == payer, Job.pay_nonce == nonce)
    assert row.id == job_id
    assert moved(world, before) == served(1)
    stats = world.upstream_stats()
    assert stats["paid_submits"] - stats_before["paid_submits"] == 1
    assert paid_attempts(stats) - paid_attempts(stats_before) == 1
    assert await ledger_kinds(module_db, [job_id]) == {
        job_id: [("charge", PRICE), ("upstream", UPSTREAM_PRICE)]
    }
    await audit(module_db, world.rpc_url)


async def test_replay_verified_after_the_payment_settled_gets_the_job_not_a_402(
    world: World, module_db: str
) -> None:
    """A client retries while its first request is still being verified: both get the job."""
    payment = await sign_payment(edit_url(world, 0), key_hex(PAYER))
    payer, nonce = payer_and_nonce(payment)
    before = balances(world)
    # The first request's verification stalls (slow facilitator, well within the timeout)...
    world.set_facilitator_faults({"verify_timeout": {"times": 1, "value": 6}})
    try:
        slow = asyncio.create_task(post(edit_url(world, 0), payment))
        while httpx.get(world.facilitator_url + "/_faults", timeout=5).json()["faults"]:
            await asyncio.sleep(0.02)
        # ...while the retry, on the other replica, verifies, records and settles the payment.
        fast = await post(edit_url(world, 1), payment)
        late = await slow
    finally:
        world.reset_facilitator()

    assert fast.status_code == 200, fast.text
    job_id = fast.json()["jobId"]
    await completed(world, job_id)
    assert [
        row.id for row in await rows(module_db, Job.payer == payer, Job.pay_nonce == nonce)
    ] == [job_id]
    assert moved(world, before) == served(1)
    await audit(module_db, world.rpc_url)
    assert late.status_code == 200, late.text
    assert late.json()["jobId"] == job_id


async def test_twenty_payments_on_two_replicas_complete_with_coalesced_polling(
    world: World, module_db: str
) -> None:
    payments = await asyncio.gather(
        *(sign_payment(edit_url(world, i % 2), key_hex(PAYER)) for i in range(20))
    )
    before = balances(world)
    world.reset_upstream()

    job_ids = await asyncio.gather(
        *(served_job(edit_url(world, i % 2), p) for i, p in enumerate(payments))
    )
    assert len(set(job_ids)) == 20

    async def watch(job_id: str, reader: int) -> None:
        await completed(world, job_id, replica=reader % 2)

    # Three readers per job, spread over both replicas, all long-polling at once.
    await asyncio.gather(*(watch(job_id, r) for job_id in job_ids for r in range(3)))

    stats = world.upstream_stats()
    assert stats["paid_submits"] == 20
    assert paid_attempts(stats) == 20
    assert stats["jobs_created"] == 20
    found = await rows(module_db, Job.id.in_(job_ids))
    assert len(found) == 20
    for row in found:
        assert row.state == "completed"
        busy_s = (row.finished_at - row.created_at).total_seconds()
        polls = stats["status_requests_by_job"].get(row.upstream_job_id, 0)
        assert 1 <= polls <= busy_s / POLL_INTERVAL_S + 2, (row.id, polls, busy_s)
    ledgers = await ledger_kinds(module_db, job_ids)
    assert all(
        kinds == [("charge", PRICE), ("upstream", UPSTREAM_PRICE)] for kinds in ledgers.values()
    ), ledgers
    assert moved(world, before) == served(20)
    await audit(module_db, world.rpc_url)


async def test_background_worker_never_processes_a_job_the_request_is_driving(
    world: World, module_db: str
) -> None:
    """A replica whose worker wakes up often: each paid job must still be bought once."""
    eager = world.start_gateway(
        2, extra_env={"X402R_WORKERS_ENABLED": "true", "X402R_WORKER_INTERVAL_S": "0.01"}
    )
    try:
        payments = [await sign_payment(edit_url(world, 2), key_hex(PAYER)) for _ in range(8)]
        before = balances(world)
        world.reset_upstream()

        answers = [await post(edit_url(world, 2), payment) for payment in payments]
        job_ids = [a.json().get("jobId") or a.json()["details"]["jobId"] for a in answers]
        finals = await final_rows(module_db, job_ids)
    finally:
        eager.stop()
    await audit(module_db, world.rpc_url)

    stats = world.upstream_stats()
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert [row.state for row in finals] == ["completed"] * 8
    assert paid_attempts(stats) == 8, stats
    ledgers = await ledger_kinds(module_db, job_ids)
    assert all(
        kinds == [("charge", PRICE), ("upstream", UPSTREAM_PRICE)] for kinds in ledgers.values()
    ), ledgers
    assert moved(world, before) == served(8)


async def test_idempotency_key_is_scoped_to_payer_and_request(world: World, module_db: str) -> None:
    key = "order-" + secrets.token_hex(8)
    before = balances(world)
    stats_before = world.upstream_stats()

    first = await sign_payment(edit_url(world, 0), key_hex(PAYER))
    job_id = await served_job(edit_url(world, 0), first, key=key)

    # Same key, same body, a NEW payment, other replica: the same job, the new payment unused.
    second = await sign_payment(edit_url(world, 1), key_hex(PAYER))
    again = await post(edit_url(world, 1), second, key=key)
    assert again.status_code == 200, again.text
    assert again.json()["jobId"] == job_id

    # Same key, different body: a conflict, and that payment is not used either.
    third = await sign_payment(edit_url(world, 0), key_hex(PAYER), OTHER_BODY)
    conflict = await post(edit_url(world, 0), third, body=OTHER_BODY, key=key)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"] == "idempotency_conflict"

    # Another payer with the same key gets a job of their own.
    theirs = await sign_payment(edit_url(world, 1), key_hex(PAYER_2))
    other_job = await served_job(edit_url(world, 1), theirs, key=key)
    assert other_job != job_id

    await completed(world, job_id)
    await completed(world, other_job)
    for unused in (second, third):
        payer, nonce = payer_and_nonce(unused)
        assert not authorization_state(world.rpc_url, payer, nonce)
        assert await rows(module_db, Job.payer == payer, Job.pay_nonce == nonce) == []
    assert moved(world, before) == {
        PAYER: -PRICE,
        PAYER_2: -PRICE,
        OPERATOR: 2 * PRICE,
        HOT_WALLET: -2 * UPSTREAM_PRICE,
        UPSTREAM_PAYEE: 2 * UPSTREAM_PRICE,
    }
    stats = world.upstream_stats()
    assert stats["paid_submits"] - stats_before["paid_submits"] == 2
    await audit(module_db, world.rpc_url)


async def test_payment_identifier_extension_works_like_an_idempotency_key(
    world: World, module_db: str
) -> None:
    payment_id = "pay_" + secrets.token_hex(12)
    before = balances(world)

    first = await sign_with_payment_id(edit_url(world, 0), key_hex(PAYER), payment_id)
    job_id = await served_job(edit_url(world, 0), first)
    second = await sign_with_payment_id(edit_url(world, 1), key_hex(PAYER), payment_id)
    again = await post(edit_url(world, 1), second)
    assert again.status_code == 200, again.text
    assert again.json()["jobId"] == job_id

    await completed(world, job_id)
    payer, nonce = payer_and_nonce(second)
    assert not authorization_state(world.rpc_url, payer, nonce)
    assert moved(world, before) == served(1)
    await audit(module_db, world.rpc_url)


async def test_required_payment_identifier_refuses_payments_without_one(
    world: World, module_db: str
) -> None:
    strict = world.start_gateway(2, extra_env={"X402R_PAYMENT_IDENTIFIER_REQUIRED": "true"})
    try:
        url = edit_url(world, 2)
        async with httpx.AsyncClient(timeout=30) as http:
            unpaid = await http.post(url, json=EDIT_BODY)
        required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
        assert isinstance(required, PaymentRequired)
        declared = required.extensions
        assert declared is not None
        assert declared[PAYMENT_IDENTIFIER]["info"]["required"] is True
        before = balances(world)

        anonymous = await sign_with_payment_id(url, key_hex(PAYER), None)
        v1_payment = await sign_payment(url, key_hex(PAYER), v1_only=True)
        for payment in (anonymous, v1_payment):
            refused = await post(url, payment)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == "payment_identifier_required"
            payer, nonce = payer_and_nonce(payment)
            assert not authorization_state(world.rpc_url, payer, nonce)
            assert await rows(module_db, Job.payer == payer, Job.pay_nonce == nonce) == []
        assert moved(world, before) == {}

        named = await sign_with_payment_id(url, key_hex(PAYER), "pay_" + secrets.token_hex(12))
        await completed(world, await served_job(url, named), replica=2)
        assert moved(world, before) == served(1)
        await audit(module_db, world.rpc_url)
    finally:
        strict.stop()
