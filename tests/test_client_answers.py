"""Answers a client can act on: never a fresh 402 once charged, never a silent wait, and
plain words about what happened to its money.

The gateway here runs without `X402R_RPC_URL` (remote facilitator, explicitly allowed): the
case where a settlement's answer lost for good leaves the outcome unknowable.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.api.deps import get_gateway
from app.api.job_reads import JobReads
from app.jobs.models import Job
from app.jobs.policy import MAX_SETTLE_ATTEMPTS
from app.main import create_app
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, key_hex
from tests.helpers import (
    EDIT_BODY,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    moved,
    payment_nonce,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.settings_factory import file_settings


def test_rpc_is_required_unless_explicitly_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="X402R_RPC_URL is required"):
        file_settings(tmp_path)
    assert file_settings(tmp_path, allow_no_rpc=True).rpc_url is None
    assert file_settings(tmp_path, rpc_url="http://127.0.0.1:8545").allow_no_rpc is False


def _refused() -> Exception:
    return ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("route", _refused),
        ("route", lambda: asyncpg.CannotConnectNowError("the database system is starting up")),
        ("dependency", lambda: asyncpg.ConnectionDoesNotExistError("connection was closed")),
        ("fast path", _refused),
    ],
)
async def test_database_errors_anywhere_answer_json_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, error: Any
) -> None:
    app = create_app(file_settings(tmp_path, allow_no_rpc=True))

    async def fail(*_: Any) -> Any:
        raise error()

    async def no_gateway() -> Any:
        raise error()

    def failing_cached(_self: JobReads, _: str) -> None:
        raise error()

    if where == "route":
        monkeypatch.setattr(JobReads, "read", fail)
    elif where == "dependency":
        app.dependency_overrides[get_gateway] = no_gateway
    else:
        monkeypatch.setattr(JobReads, "cached", failing_cached)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            response = await http.get("/v1/jobs/job_abcdefghijklmnop")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"] == "database_unavailable"


async def test_other_unexpected_errors_are_json_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(file_settings(tmp_path, allow_no_rpc=True))

    async def fail(*_: Any) -> Any:
        raise FileNotFoundError(2, "No such file", "/nowhere")

    monkeypatch.setattr(JobReads, "read", fail)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            response = await http.get("/v1/jobs/job_abcdefghijklmnop")
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "internal_error"


@pytest.fixture
def world(blind_world: World) -> World:
    """The module's world without a chain, with no faults (see `blind_world`)."""
    return blind_world


async def _job_by_nonce(database_url: str, nonce: str) -> Any:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(Job).where(Job.pay_nonce == nonce))).one()
    finally:
        await engine.dispose()


async def _make_due(database_url: str, job_id: str, **values: Any) -> None:
    """Let time pass for one job: its next check is now (and `values` are set)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(next_check_at=datetime.now(UTC) - timedelta(seconds=1), **values)
            )
    finally:
        await engine.dispose()


async def _until(check: Any, timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.3)


async def test_unresolved_settlement_is_never_asked_to_pay_again(world: World) -> None:
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": "settled, but the answer is lost for good"}
    payment = await sign_payment(url, key_hex(PAYER), body)
    before = balances(world)
    world.set_facilitator_faults({"settle_lost": True})
    async with httpx.AsyncClient(timeout=60) as http:
        first = await http.post(url, json=body, headers=payment)
        assert first.status_code == 503, first.text
        job = await _job_by_nonce(world.database_url, payment_nonce(payment))
        assert first.json()["error"] == "payment_outcome_unknown"
        assert first.json()["details"]["jobId"] == job.id  # the client can follow its job
        # Time passes: the last settle attempt the gateway allows itself, still unanswered.
        await _make_due(world.database_url, job.id, settle_attempts=MAX_SETTLE_ATTEMPTS - 1)

        async def parked() -> Any:
            row = await _job_by_nonce(world.database_url, payment_nonce(payment))
            return row if row.state == "needs_attention" else None

        job = await _until(parked)
        assert job.error_code == "settlement_unresolved"
        retry = await http.post(url, json=body, headers=payment)

    assert retry.status_code == 503, retry.text  # never a fresh 402: the client paid
    assert "PAYMENT-REQUIRED" not in retry.headers
    assert int(retry.headers["Retry-After"]) > 0
    answer = retry.json()
    assert answer["error"] == "settlement_unresolved"
    assert answer["details"]["jobId"] == job.id
    assert "under review" in answer["message"]
    assert moved(world, before) == {PAYER: -PRICE, OPERATOR: PRICE}  # the lost answer's transfer
    await audit(world.database_url, world.rpc_url, [job.id])


async def test_retry_after_a_crash_gets_an_answer_within_seconds(world: World) -> None:
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": "the first request dies after recording the job"}
    payment = await sign_payment(url, key_hex(PAYER), body)
    before = balances(world)
    world.gateways[0].stop()
    world.start_gateway(0, extra_env={"X402R_TEST_CRASH_AT": "after_verify"})
    try:
        async with httpx.AsyncClient(timeout=120) as http:
            with pytest.raises(httpx.TransportError):
                await http.post(url, json=body, headers=payment)
            world.start_gateway(0)
            loop = asyncio.get_running_loop()
            started = loop.time()
            retry = await http.post(url, json=body, headers=payment)
            waited = loop.time() - started
            assert retry.status_code == 503, retry.text
            assert waited < 8, waited  # the dead request's lease is 25 s: no silent wait
            assert retry.json()["error"] == "payment_in_progress"
            job_id = retry.json()["details"]["jobId"]
            assert 0 < int(retry.headers["Retry-After"]) <= 30
            # Coming back as told, the client gets its job.
            while retry.status_code != 200:
                assert loop.time() - started < 90, retry.text
                assert retry.status_code == 503, retry.text
                await asyncio.sleep(int(retry.headers["Retry-After"]))
                retry = await http.post(url, json=body, headers=payment)
    finally:
        if world.gateways[0].proc is None or world.gateways[0].proc.poll() is not None:
            world.start_gateway(0)
    assert retry.json()["jobId"] == job_id
    assert moved(world, before) == {
        PAYER: -PRICE,
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    await audit(world.database_url, world.rpc_url, [job_id])


async def test_refused_upstream_payment_says_what_happened_to_the_clients_money(
    world: World,
) -> None:
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": "the upstream keeps asking for payment"}
    payment = await sign_payment(url, key_hex(PAYER), body)
    before = balances(world)
    world.set_faults({"payment_loop": True})
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(url, json=body, headers=payment)

    assert response.status_code == 502, response.text
    answer = response.json()
    assert answer["error"] == "upstream_payment_refused"
    refund = answer["details"]["refund"]
    assert refund["status"] == "refunded"
    assert refund["amount"] == str(PRICE)
    assert refund["tx"].startswith("0x")
    assert answer["message"].startswith("the upstream refused our payment to it")
    assert f"your payment of 0.063240 USDC was refunded in {refund['tx']}" in answer["message"]
    assert moved(world, before) == {OPERATOR: PRICE, HOT_WALLET: -PRICE}  # the client is whole
    await audit(world.database_url, world.rpc_url, [answer["details"]["jobId"]])


async def test_pending_refund_shows_in_the_job_with_its_next_attempt(world: World) -> None:
    url = world.gateway_url() + "/v1/images/edit"
    body = {**EDIT_BODY, "prompt": "the upstream fails, the first refund attempt fails"}
    payment = await sign_payment(url, key_hex(PAYER), body)
    before = balances(world)
    world.set_faults({"job_fails": "content policy violation"})
    async with httpx.AsyncClient(timeout=60) as http:
        accepted = await http.post(url, json=body, headers=payment)
        assert accepted.status_code == 200, accepted.text
        world.set_facilitator_faults({"settle_5xx": True})  # refunds fail, nothing moves
        status_url = accepted.json()["statusUrl"]

        async def pending() -> dict[str, Any] | None:
            view: dict[str, Any] = (await http.get(status_url)).json()
            return view if view.get("refund", {}).get("nextAttemptAt") else None

        view = await _until(pending)
        assert view["status"] == "failed"
        assert view["refund"]["status"] == "pending"
        assert view["refund"]["amount"] == str(PRICE)
        assert view["refund"]["transaction"] is None
        next_attempt = datetime.fromisoformat(view["refund"]["nextAttemptAt"])
        assert view["refund"]["nextAttemptAt"].endswith("Z")
        assert timedelta(0) < next_attempt - datetime.now(UTC) <= timedelta(seconds=301)

        world.reset_facilitator()
        await _make_due(world.database_url, accepted.json()["jobId"])

        async def refunded() -> dict[str, Any] | None:
            view: dict[str, Any] = (await http.get(status_url)).json()
            return view if view["state"] == "refunded" else None

        view = await _until(refunded)
    assert view["refund"]["status"] == "refunded"
    assert "nextAttemptAt" not in view["refund"]
    assert moved(world, before) == {
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE - PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    await audit(world.database_url, world.rpc_url, [accepted.json()["jobId"]])
