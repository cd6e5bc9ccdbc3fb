"""The team gateway end to end: API keys pay from their budgets on two replicas sharing
Postgres, beside x402 payers, and never more than their budgets, rates or own jobs allow."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from x402.http import decode_payment_required_header
from x402.http.clients import wrapHttpxWithPayment

from sandbox.pay import payer_client
from sandbox.world import PAYER, World, key_hex
from tests.helpers import ADMIN_TOKEN, EDIT_BODY, PRICE, paid_post, poll_until_done
from tests.key_helpers import (
    ADMIN,
    SECRETS,
    edit_url,
    fresh_rate_window,
    key_jobs,
    key_post,
    key_view,
    new_key,
    poll_with_key,
    scalar,
    wait_key_job_state,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free


@pytest.fixture(scope="module")
def keys_world(make_module_world: WorldMaker, module_db: str) -> World:
    """Two gateways on one Postgres database, with the admin API, default refund policy."""
    return make_module_world(
        gateways=2,
        job_delay_s=0.3,
        database_url=module_db,
        X402R_ADMIN_TOKEN=ADMIN_TOKEN,
        X402R_UPSTREAM_TIMEOUT_S="3",
        X402R_FACILITATOR_TIMEOUT_S="10",
    )


@pytest.fixture
def world(keys_world: World) -> Iterator[World]:
    """The module's world with a clean upstream before and after each test."""
    yield from fault_free(keys_world)


async def test_fifty_concurrent_requests_on_two_replicas_buy_exactly_the_budget(
    world: World, module_db: str
) -> None:
    key_id, secret = await new_key(world, budget=10 * PRICE)
    async with httpx.AsyncClient(timeout=120) as http:
        keyed = [key_post(http, world, secret, replica=i % 2) for i in range(50)]
        sdk_paid = paid_post(edit_url(world, 1), key_hex(PAYER))  # x402 payers alongside
        *answers, paid = await asyncio.gather(*keyed, sdk_paid)

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 10 + [402] * 40, [a.text for a in answers if a.status_code >= 500]
    refusal = next(a for a in answers if a.status_code == 402)
    assert refusal.json()["error"] == "budget_exhausted"
    assert refusal.json()["details"] == {
        "budget": "total",
        "remaining": "0",
        "remainingToday": None,
    }
    assert paid.status_code == 200, paid.text
    assert "PAYMENT-RESPONSE" in paid.headers

    assert await key_jobs(module_db, key_id) == 10
    view = await key_view(world, key_id, replica=1)
    assert (view["spent"], view["jobs"], view["ledgerAgrees"]) == (str(10 * PRICE), 10, True)
    debits = await scalar(
        module_db, "SELECT sum(amount) FROM key_ledger WHERE key_id = :k AND kind = 'debit'",
        k=key_id,
    )  # fmt: skip
    assert debits == 10 * PRICE
    for answer in (a for a in answers if a.status_code == 200):
        job = await poll_until_done(answer.json()["statusUrl"])
        assert job["status"] == "completed", job
        assert job["payment"] == {
            "method": "api_key", "apiKeyId": key_id, "payer": None, "amount": str(PRICE),
            "amountDisplay": job["payment"]["amountDisplay"], "asset": job["payment"]["asset"],
            "network": None, "transaction": None,
        }  # fmt: skip
    sums = await audit(module_db, world.rpc_url)  # the on-chain ledger has no key money in it
    assert sums["charge"] % PRICE == 0


async def test_the_daily_budget_stops_a_key_for_the_day(world: World, module_db: str) -> None:
    key_id, secret = await new_key(world, dailyBudget=PRICE + PRICE // 2)
    async with httpx.AsyncClient(timeout=60) as http:
        first = await key_post(http, world, secret)
        second = await key_post(http, world, secret, replica=1)
    assert first.status_code == 200, first.text
    assert second.status_code == 402
    assert second.json()["details"] == {
        "budget": "daily",
        "remaining": None,
        "remainingToday": str(PRICE // 2),
    }
    assert await key_jobs(module_db, key_id) == 1
    assert (await key_view(world, key_id))["spentToday"] == str(PRICE)


async def test_unusable_keys_get_401_and_record_nothing(world: World, module_db: str) -> None:
    revoked_id, revoked = await new_key(world, budget=10 * PRICE)
    async with httpx.AsyncClient(timeout=30) as http:
        gone = await http.post(
            f"{world.gateway_url(1)}/v1/admin/keys/{revoked_id}/revoke", headers=ADMIN
        )
        assert gone.json()["status"] == "revoked"
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        expired_id, expired = await new_key(world, budget=10 * PRICE, expiresAt=past)
        jobs_before = await scalar(module_db, "SELECT count(*) FROM jobs")
        for header in (
            f"Bearer {revoked}",
            f"Bearer {expired}",
            "Bearer x402r_" + "A" * 43,
            "Bearer",
            "Basic dXNlcjpwYXNz",
        ):
            for replica in (0, 1):
                refused = await http.post(
                    edit_url(world, replica), json=EDIT_BODY, headers={"Authorization": header}
                )
                assert refused.status_code == 401, (header, refused.text)
                assert refused.json()["error"] == "invalid_api_key"
                assert refused.headers["WWW-Authenticate"].startswith("Bearer")
                assert "x402r_" not in refused.text
    assert await scalar(module_db, "SELECT count(*) FROM jobs") == jobs_before
    for key_id in (revoked_id, expired_id):
        assert (await key_view(world, key_id))["spent"] == "0"


async def test_an_exhausted_key_gets_the_requirements_the_sdk_then_pays(world: World) -> None:
    key_id, secret = await new_key(world, budget=PRICE - 1)
    bearer = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=60) as http:
        exhausted = await http.post(edit_url(world), json=EDIT_BODY, headers=bearer)
        unpaid = await http.post(edit_url(world), json=EDIT_BODY)
    assert exhausted.status_code == 402
    body = exhausted.json()
    assert body["error"] == "budget_exhausted"
    assert body["details"]["remaining"] == str(PRICE - 1)
    assert body["accepts"] == unpaid.json()["accepts"]
    required = decode_payment_required_header(exhausted.headers["PAYMENT-REQUIRED"])
    assert (
        required.accepts
        == decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"]).accepts
    )

    # The same client, key still attached, lets the official SDK pay the 402 instead.
    async with wrapHttpxWithPayment(
        payer_client(key_hex(PAYER)), timeout=60, headers=bearer
    ) as http:
        paid = await http.post(edit_url(world, 1), json=EDIT_BODY)
    assert paid.status_code == 200, paid.text
    job = await poll_until_done(paid.json()["statusUrl"])
    assert job["payment"]["method"] == "x402"
    assert job["payment"]["transaction"].startswith("0x")
    assert (await key_view(world, key_id))["spent"] == "0"


async def test_the_rate_limit_holds_across_replicas(world: World, module_db: str) -> None:
    key_id, secret = await new_key(world, ratePerMinute=3)
    fresh_rate_window()
    async with httpx.AsyncClient(timeout=60) as http:
        answers = [await key_post(http, world, secret, replica=i % 2) for i in range(6)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429, 429]
    limited = answers[3]
    assert limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert await key_jobs(module_db, key_id) == 3
    assert (await key_view(world, key_id))["spent"] == str(3 * PRICE)


async def _assert_credited_once(world: World, module_db: str, key_id: str, job_id: str) -> None:
    view = await key_view(world, key_id)
    assert (view["spent"], view["credited"], view["ledgerAgrees"]) == ("0", str(PRICE), True)
    kinds = await scalar(
        module_db, "SELECT count(*) FROM key_ledger WHERE job_id = :j AND kind = 'credit'", j=job_id
    )
    assert kinds == 1
    assert await scalar(module_db, "SELECT count(*) FROM ledger WHERE job_id = :j", j=job_id) == 0
    await audit(module_db, world.rpc_url, [job_id])


async def test_a_failed_key_paid_job_is_credited_back_once(world: World, module_db: str) -> None:
    key_id, secret = await new_key(world, budget=PRICE)
    world.set_faults({"submit_5xx_before_settle": True})  # the upstream never charges us
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await key_post(http, world, secret)
    assert answer.status_code in (200, 502), answer.text
    job_id, state = await wait_key_job_state(
        module_db, key_id, {"refunded", "failed", "needs_attention"}
    )
    assert state == "refunded"
    async with httpx.AsyncClient(timeout=30) as http:
        job = (await http.get(f"{world.gateway_url(1)}/v1/jobs/{job_id}")).json()
    assert job["refund"] == {
        "amount": str(PRICE), "transaction": None, "status": "refunded", "to": "api_key_budget",
    }  # fmt: skip
    assert world.upstream_stats()["paid_submits"] == 0
    await _assert_credited_once(world, module_db, key_id, job_id)


async def test_a_crash_after_the_debit_is_resumed_and_refunded_once(
    world: World, module_db: str
) -> None:
    key_id, secret = await new_key(world, budget=PRICE)
    world.gateways[1].stop()
    world.start_gateway(1, extra_env={"X402R_TEST_CRASH_AT": "after_key_debit"})
    world.set_faults({"submit_5xx_before_settle": True})
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            with pytest.raises(httpx.TransportError):
                await key_post(http, world, secret, replica=1)
        assert world.gateways[1].proc is not None
        assert world.gateways[1].proc.wait(10) == -9  # killed right after the debit committed
        job_id, state = await wait_key_job_state(module_db, key_id, frozenset({"paid"}))
    finally:
        world.start_gateway(1)  # restarted; either replica's worker resumes the job
    job_id, state = await wait_key_job_state(
        module_db, key_id, {"refunded", "failed", "needs_attention"}
    )
    assert state == "refunded"
    await _assert_credited_once(world, module_db, key_id, job_id)


async def test_an_idempotency_key_buys_one_job_per_key(world: World, module_db: str) -> None:
    key_id, secret = await new_key(world, budget=10 * PRICE)
    _, other = await new_key(world, budget=10 * PRICE)
    async with httpx.AsyncClient(timeout=60) as http:
        first = await key_post(http, world, secret, 0, None, **{"Idempotency-Key": "batch-7"})
        again = await key_post(http, world, secret, 1, None, **{"Idempotency-Key": "batch-7"})
        changed = await key_post(
            http, world, secret, 0, {**EDIT_BODY, "prompt": "x"}, **{"Idempotency-Key": "batch-7"}
        )
        someone_else = await key_post(http, world, other, 0, None, **{"Idempotency-Key": "batch-7"})
    assert first.status_code == again.status_code == someone_else.status_code == 200
    assert again.json()["jobId"] == first.json()["jobId"]
    assert someone_else.json()["jobId"] != first.json()["jobId"]  # scoped to the key
    assert changed.status_code == 409
    assert changed.json()["error"] == "idempotency_conflict"
    assert await key_jobs(module_db, key_id) == 1
    assert (await key_view(world, key_id))["spent"] == str(PRICE)


async def test_own_jobs_only_hides_a_keys_jobs_from_everyone_else(world: World) -> None:
    _, owner = await new_key(world, ownJobsOnly=True)
    _, other = await new_key(world)
    async with httpx.AsyncClient(timeout=60) as http:
        bought = await key_post(http, world, owner)
        assert bought.status_code == 200, bought.text
        job_id = bought.json()["jobId"]
        unknown = await http.get(world.gateway_url() + "/v1/jobs/job_" + "x" * 24)
        for _ in range(2):  # again once served from the replicas' caches
            for replica in (0, 1):
                url = f"{world.gateway_url(replica)}/v1/jobs/{job_id}"
                mine = await http.get(url, headers={"Authorization": f"Bearer {owner}"})
                assert mine.status_code == 200
                assert mine.json()["jobId"] == job_id
                for headers in ({}, {"Authorization": f"Bearer {other}"}):
                    for params in ({}, {"wait": 1}):  # long polls are served apart
                        hidden = await http.get(url, headers=headers, params=params)
                        assert hidden.status_code == 404, params
                        assert hidden.json() == unknown.json()  # as if it did not exist
            await poll_with_key(http, url, owner)


async def test_x402_jobs_stay_readable_by_their_id(world: World) -> None:
    paid = await paid_post(edit_url(world), key_hex(PAYER))
    assert paid.status_code == 200, paid.text
    async with httpx.AsyncClient(timeout=30) as http:
        read = await http.get(f"{world.gateway_url(1)}/v1/jobs/{paid.json()['jobId']}")
    assert read.status_code == 200


def test_no_key_appears_in_any_log(keys_world: World) -> None:
    """Runs last: every scenario above has written its lines by now."""
    assert len(SECRETS) >= 8
    logs = sorted(p for p in keys_world.log_dir.rglob("*") if p.is_file())
    assert any(p.name.startswith("gateway") for p in logs), logs
    text_of = {p: p.read_text(errors="replace") for p in logs}
    assert any("key-paid job" in t for t in text_of.values())  # the requests were logged
    for path, content in text_of.items():
        for secret in SECRETS:
            assert secret not in content, f"an API key in {path}"
            assert secret[12:] not in content, f"part of an API key in {path}"
