"""The daily spend cap is reserved before the client is charged, not after.

With room for two upstream purchases and eight clients paying at once, exactly two are
charged and served; the other six are told 503 `daily_spend_cap_reached` and lose nothing
(no charge, hence no refund). A job that ends unbought gives its reservation back.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs import reservation
from app.jobs.models import Job, JobState, LedgerEntry, SpendHour
from app.jobs.repository import JobRepository
from app.jobs.transitions import transition
from sandbox.chain import usdc_balance
from sandbox.world import HOT_WALLET, OPERATOR, UPSTREAM_PAYEE, World, address
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    funded_payer,
    operator_side,
    poll_until_done,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker

CAP = 2 * UPSTREAM_PRICE + UPSTREAM_PRICE // 2  # room for two upstream purchases
CLIENTS = 8


@pytest.fixture(scope="module")
def cap_world(make_module_world: WorldMaker, module_db: str) -> World:
    """Two replicas allowed two upstream purchases per day."""
    return make_module_world(
        gateways=2,
        job_delay_s=0.3,
        database_url=module_db,
        X402R_DAILY_UPSTREAM_CAP_ATOMIC=str(CAP),
    )


@pytest.fixture
def world(cap_world: World) -> World:
    """Each test starts on a new day: no upstream spend counted yet."""
    asyncio.run(_execute(cap_world.database_url, delete(SpendHour)))
    return cap_world


async def _execute(database_url: str, stmt: object) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(stmt)  # type: ignore[call-overload]
    finally:
        await engine.dispose()


async def _scalar(database_url: str, stmt: object) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            value = (await conn.execute(stmt)).scalar_one()  # type: ignore[call-overload]
    finally:
        await engine.dispose()
    return int(value or 0)


async def _post_until_final(
    http: httpx.AsyncClient, url: str, body: dict[str, object], headers: dict[str, str]
) -> httpx.Response:
    """POST the paid request; on an answer that says "retry with the SAME payment" (a slow
    settlement on a loaded machine), retry it as a client would, a few times at most."""
    for _ in range(10):
        answer = await http.post(url, json=body, headers=headers)
        retry_after = answer.headers.get("Retry-After")
        if answer.status_code != 503 or retry_after is None:
            return answer
        if answer.json()["error"] == "daily_spend_cap_reached":
            return answer
        await asyncio.sleep(min(float(retry_after), 5))
    return answer


async def test_full_cap_answers_503_before_anyone_is_charged(world: World) -> None:
    payers = [funded_payer(world, PRICE) for _ in range(CLIENTS)]
    urls = [world.gateway_url(i % 2) + "/v1/images/edit" for i in range(CLIENTS)]
    bodies = [{**EDIT_BODY, "prompt": f"client {i}"} for i in range(CLIENTS)]
    signed = [
        await sign_payment(url, key, body)
        for url, (key, _), body in zip(urls, payers, bodies, strict=True)
    ]
    before = operator_side(world)
    jobs_before = await _scalar(world.database_url, select(func.count()).select_from(Job))

    async with httpx.AsyncClient(timeout=60) as http:
        answers = await asyncio.gather(
            *(
                _post_until_final(http, url, body, headers)
                for url, body, headers in zip(urls, bodies, signed, strict=True)
            )
        )

    served = [i for i, a in enumerate(answers) if a.status_code == 200]
    turned_away = [i for i, a in enumerate(answers) if a.status_code != 200]
    # Compact, so a failure shows every answer (pytest cuts long messages).
    assert len(served) == 2, [(a.status_code, a.text[:60]) for a in answers]
    for i in turned_away:
        assert answers[i].status_code == 503, answers[i].text
        assert answers[i].json()["error"] == "daily_spend_cap_reached"
        assert "PAYMENT-RESPONSE" not in answers[i].headers
        assert usdc_balance(world.rpc_url, payers[i][1]) == PRICE  # untouched
    for i in served:
        job = await poll_until_done(answers[i].json()["statusUrl"])
        assert job["status"] == "completed", job
        assert usdc_balance(world.rpc_url, payers[i][1]) == 0
    after = operator_side(world)
    assert {i: after[i] - before[i] for i in after} == {
        OPERATOR: 2 * PRICE,
        HOT_WALLET: -2 * UPSTREAM_PRICE,
        UPSTREAM_PAYEE: 2 * UPSTREAM_PRICE,
    }
    # Nothing was recorded for the six: no job, no charge, no refund.
    jobs_after = await _scalar(world.database_url, select(func.count()).select_from(Job))
    assert jobs_after - jobs_before == 2
    refunds = select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "refund")
    assert await _scalar(world.database_url, refunds) == 0
    assert await _scalar(world.database_url, select(func.sum(SpendHour.amount))) == (
        2 * UPSTREAM_PRICE
    )
    await audit(world.database_url, world.rpc_url)


def _job(payer: str) -> Job:
    """A freshly verified job, as the paid path records it (no gateway needed)."""
    return Job(
        id="job_" + secrets.token_hex(8),
        state=JobState.VERIFIED.value,
        route="/v1/images/edit",
        request_body=EDIT_BODY,
        fingerprint="f" * 64,
        x402_version=2,
        payer=payer,
        pay_network="eip155:8453",
        pay_asset=address(OPERATOR),
        pay_amount=PRICE,
        pay_to=address(OPERATOR),
        pay_nonce="0x" + secrets.token_hex(32),
        pay_valid_before=2**40,
        payment_payload={},
        payment_requirements={},
        settle_attempts=0,
        upstream_attempts=0,
    )


def test_reservations_follow_the_job(new_database: Callable[[], str]) -> None:
    """Reserved when recorded, trued up to the signed amount, given back when the job ends
    without an upstream authorization, kept when one was signed (on real Postgres)."""
    asyncio.run(_reservations_follow_the_job(new_database()))


async def _reservations_follow_the_job(database_url: str) -> None:
    engine = create_async_engine(database_url)
    spent = select(func.coalesce(func.sum(SpendHour.amount), 0))
    room = 3 * UPSTREAM_PRICE
    try:
        async with engine.begin() as conn:
            refused, signed, too_dear = _job("0x" + "1" * 40), _job("0x" + "2" * 40), _job("0x3")
            for job in (refused, signed, too_dear):
                assert await reservation.reserve_for(conn, job, UPSTREAM_PRICE, room)
                await JobRepository(conn).add(job)
            # The cap is full now: a fourth job is refused before it is recorded.
            assert not await reservation.reserve_for(conn, _job("0x4"), 1, room)
            assert (await conn.execute(spent)).scalar_one() == 3 * UPSTREAM_PRICE

            # The payment is refused: the job ends unbought and its reservation is returned.
            await transition(
                conn,
                refused.id,
                [JobState.VERIFIED],
                event="settle_refused",
                state="payment_failed",
            )
            await reservation.release_unspent(conn, refused.id)
            await reservation.release_unspent(conn, refused.id)  # once only
            assert (await conn.execute(spent)).scalar_one() == 2 * UPSTREAM_PRICE

            # Signed for less than the quote: the difference is returned at once.
            counted = await reservation.true_up(conn, signed, UPSTREAM_PRICE - 700, room)
            assert counted is not None
            await transition(
                conn,
                signed.id,
                [JobState.VERIFIED],
                event="upstream_signed",
                state="upstream_signed",
                upstream_nonce="0x" + "ab" * 32,
                **counted.values,
            )
            await transition(
                conn,
                signed.id,
                [JobState.UPSTREAM_SIGNED],
                event="failed_no_refund",
                state="failed",
            )
            await reservation.release_unspent(conn, signed.id)  # signed: stays counted
            assert (await conn.execute(spent)).scalar_one() == 2 * UPSTREAM_PRICE - 700

            # Signed for more than the quote and the cap has no room: nothing changes.
            dearer = UPSTREAM_PRICE + 800
            assert await reservation.true_up(conn, too_dear, dearer, 2 * UPSTREAM_PRICE) is None
            assert (await conn.execute(spent)).scalar_one() == 2 * UPSTREAM_PRICE - 700
    finally:
        await engine.dispose()
