"""API keys over a real database (Postgres and SQLite): the service, the budget's debit and
credit, and the `x402-reseller keys` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import core_transaction, create_sessionmaker, transaction
from app.core.errors import Conflict, NotFound
from app.jobs.key_refund import refund_to_key
from app.jobs.models import Job, JobState
from app.keys import service
from app.keys.auth import authenticate
from app.keys.errors import BudgetExhausted, InvalidApiKey
from app.keys.models import ApiKey, KeyLedgerEntry
from app.keys.tokens import secret_hash
from app.main import create_app
from sandbox.world import HOT_WALLET, OPERATOR, address, key_hex
from tests.helpers import ADMIN_TOKEN, PRICE, UPSTREAM_PRICE
from tests.inprocess_app import client_for
from tests.key_helpers import create_key_in, record_key_job
from tests.settings_factory import file_settings

ADMIN_AS_KEY = {"Authorization": "Bearer x402r_" + "B" * 43}  # a key is not the admin token


async def _show(engine: AsyncEngine, key_id: str) -> dict[str, Any]:
    async with transaction(create_sessionmaker(engine)) as session:
        return await service.show_key(session, key_id)


async def _count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def test_a_key_is_stored_as_its_hash_and_shown_once(engine: AsyncEngine) -> None:
    key, secret = await create_key_in(engine, name="design team", budget_atomic=10 * PRICE)
    assert secret.startswith("x402r_")
    assert len(secret) >= 6 + 43  # 32 random bytes, URL-safe
    assert key["prefix"] == secret[:12]
    assert key["status"] == "active"
    assert key["remaining"] == str(10 * PRICE)
    async with engine.connect() as conn:
        stored = (await conn.execute(select(ApiKey))).one()
        dump = json.dumps([str(v) for v in stored._mapping.values()])
    assert stored.secret_hash == secret_hash(secret)
    assert secret not in dump
    assert secret not in json.dumps(key)
    caller = await authenticate(engine, f"Bearer {secret}", datetime.now(UTC))
    assert caller.id == key["id"]
    with pytest.raises(Conflict, match="exists"):
        await create_key_in(engine, name="design team")


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Basic abc", "Bearer x402r_unknownunknownunknownunknown"]
)
async def test_missing_or_unknown_keys_are_refused(engine: AsyncEngine, header: str | None) -> None:
    with pytest.raises(InvalidApiKey) as caught:
        await authenticate(engine, header, datetime.now(UTC))
    assert caught.value.status_code == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")


async def test_revoked_and_expired_keys_cannot_pay(engine: AsyncEngine) -> None:
    revoked, secret = await create_key_in(engine, budget_atomic=PRICE * 5)
    async with transaction(create_sessionmaker(engine)) as session:
        assert (await service.revoke_key(session, revoked["id"]))["status"] == "revoked"
    # A minute ago, written in another offset (stored as UTC, or SQLite would see +5 h).
    past = (datetime.now(UTC) - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=5)))
    expired, expired_secret = await create_key_in(engine, expires_at=past)
    for key_id, token in ((revoked["id"], secret), (expired["id"], expired_secret)):
        with pytest.raises(InvalidApiKey, match="revoked or expired"):
            await authenticate(engine, f"Bearer {token}", datetime.now(UTC))
        with pytest.raises(InvalidApiKey):  # revoked between the look-up and the debit
            await record_key_job(engine, key_id)
    assert await _count(engine, "SELECT count(*) FROM jobs") == 0
    assert await _count(engine, "SELECT count(*) FROM key_ledger") == 0


async def test_the_total_budget_is_never_overrun_and_a_refusal_leaves_nothing(
    engine: AsyncEngine,
) -> None:
    key, _ = await create_key_in(engine, budget_atomic=2 * PRICE + 5)
    await record_key_job(engine, key["id"])
    await record_key_job(engine, key["id"])
    with pytest.raises(BudgetExhausted) as caught:
        await record_key_job(engine, key["id"])
    assert caught.value.details() == {"budget": "total", "remaining": "5", "remainingToday": None}
    shown = await _show(engine, key["id"])
    assert (shown["spent"], shown["jobs"], shown["ledgerAgrees"]) == (str(2 * PRICE), 2, True)
    assert await _count(engine, "SELECT count(*) FROM jobs") == 2
    assert (
        await _count(engine, "SELECT coalesce(sum(amount), 0) FROM spend_hours")
        == 2 * UPSTREAM_PRICE
    )


async def test_the_daily_budget_refuses_once_the_day_is_spent(engine: AsyncEngine) -> None:
    key, _ = await create_key_in(
        engine, budget_atomic=100 * PRICE, daily_budget_atomic=PRICE * 3 // 2
    )
    await record_key_job(engine, key["id"])
    with pytest.raises(BudgetExhausted) as caught:
        await record_key_job(engine, key["id"])
    assert caught.value.which == "daily"
    assert caught.value.remaining["remainingToday"] == str(PRICE // 2)
    shown = await _show(engine, key["id"])
    assert shown["spent"] == shown["spentToday"] == str(PRICE)  # the refusal took nothing back
    assert shown["ledgerAgrees"]


async def test_concurrent_debits_stop_exactly_at_the_budget(engine: AsyncEngine) -> None:
    key, _ = await create_key_in(engine, budget_atomic=10 * PRICE)
    if engine.dialect.name == "sqlite":
        attempts = 15  # one writer at a time: the point here is Postgres' row lock
    else:
        attempts = 50
    results = await asyncio.gather(
        *(record_key_job(engine, key["id"]) for _ in range(attempts)), return_exceptions=True
    )
    bought = [r for r in results if isinstance(r, Job)]
    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert len(bought) == 10, [r for r in results if not isinstance(r, Job)][:3]
    assert len(refused) == attempts - 10
    shown = await _show(engine, key["id"])
    assert shown["spent"] == str(10 * PRICE)
    assert shown["ledgerAgrees"]
    assert await _count(engine, "SELECT count(*) FROM jobs WHERE state = 'paid'") == 10


async def test_a_refund_credits_the_key_exactly_once(engine: AsyncEngine) -> None:
    key, _ = await create_key_in(engine, budget_atomic=PRICE, daily_budget_atomic=PRICE)
    job = await record_key_job(engine, key["id"])
    assert job.state == JobState.PAID.value
    assert job.settle_tx is None
    assert job.client_charged
    with pytest.raises(BudgetExhausted):
        await record_key_job(engine, key["id"])
    failure = {"error_code": "upstream_rejected", "error_message": "refused"}
    async with core_transaction(engine) as conn:
        first = await refund_to_key(conn, job, failure)
    async with core_transaction(engine) as conn:
        again = await refund_to_key(conn, job, failure)
    assert first is not None
    assert first.state == JobState.REFUNDED.value
    assert first.refund_amount == PRICE
    assert again is None
    shown = await _show(engine, key["id"])
    assert (shown["spent"], shown["spentToday"], shown["credited"]) == ("0", "0", str(PRICE))
    assert shown["ledgerAgrees"]
    await record_key_job(engine, key["id"])  # the credited budget buys again, today too
    async with engine.connect() as conn:
        kinds = (await conn.execute(select(KeyLedgerEntry.kind))).scalars().all()
    assert sorted(kinds) == ["credit", "debit", "debit"]
    assert await _count(engine, "SELECT count(*) FROM ledger") == 0  # no on-chain transfer


async def test_topup_raises_the_budget_with_a_ledger_row(engine: AsyncEngine) -> None:
    key, _ = await create_key_in(engine, budget_atomic=PRICE)
    await record_key_job(engine, key["id"])
    sessions = create_sessionmaker(engine)
    async with transaction(sessions) as session:
        shown = await service.topup_key(session, key["id"], PRICE, "quarterly")
    assert (shown["budget"], shown["remaining"], shown["toppedUp"]) == (
        str(2 * PRICE),
        str(PRICE),
        str(PRICE),
    )
    await record_key_job(engine, key["id"])
    unlimited, _ = await create_key_in(engine)
    with pytest.raises(Conflict, match="no total budget"):
        async with transaction(sessions) as session:
            await service.topup_key(session, unlimited["id"], PRICE)
    with pytest.raises(NotFound):
        async with transaction(sessions) as session:
            await service.topup_key(session, "key_nosuchkey", PRICE)


async def test_the_list_pages_through_every_key(engine: AsyncEngine) -> None:
    created = {(await create_key_in(engine))[0]["id"] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        async with transaction(create_sessionmaker(engine)) as session:
            page, cursor = await service.list_keys(session, limit=2, cursor=cursor)
        pages += 1
        seen += [k["id"] for k in page]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(created)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "X402R_DATABASE_URL": url,
        "X402R_PAY_TO": address(OPERATOR),
        "X402R_HOT_WALLET_PRIVATE_KEY": key_hex(HOT_WALLET),
        "X402R_FACILITATOR_URL": "http://127.0.0.1:9",
        "X402R_ALLOW_NO_RPC": "true",
    }
    command = [sys.executable, "-m", "app.cli", "--env-file", "", "keys", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def _cli_json(url: str, *args: str) -> Any:
    done = _cli(url, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_the_cli_manages_keys_in_the_database(engine: AsyncEngine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    created = await asyncio.to_thread(
        _cli_json, url, "create", "ops", "--budget", "1000000", "--rate", "5", "--own-jobs-only"
    )
    key_id, secret = created["key"]["id"], created["secret"]
    assert created["key"]["ownJobsOnly"] is True
    assert (await authenticate(engine, f"Bearer {secret}", datetime.now(UTC))).rate_per_minute == 5
    await record_key_job(engine, key_id)
    topped = await asyncio.to_thread(_cli_json, url, "topup", key_id, "500000", "--reason", "q1")
    assert (topped["budget"], topped["spent"]) == ("1500000", str(PRICE))
    listed = await asyncio.to_thread(_cli_json, url, "list")
    assert [k["id"] for k in listed["keys"]] == [key_id]
    text_list = await asyncio.to_thread(_cli, url, "list")
    assert key_id in text_list.stdout
    assert "1 jobs" in text_list.stdout
    assert secret not in text_list.stdout
    revoked = await asyncio.to_thread(_cli_json, url, "revoke", key_id)
    assert revoked["status"] == "revoked"
    missing = await asyncio.to_thread(_cli, url, "show", "key_nosuchkey")
    assert missing.returncode == 1
    assert "api_key_not_found" in missing.stderr


async def test_the_admin_api_manages_keys_behind_its_token(tmp_path: Path) -> None:
    app = create_app(file_settings(tmp_path, allow_no_rpc=True, admin_token=ADMIN_TOKEN))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with app.router.lifespan_context(app), client_for(app) as http:
        assert (await http.get("/v1/admin/keys")).status_code == 401
        refused = await http.post("/v1/admin/keys", json={"name": "x"}, headers=ADMIN_AS_KEY)
        assert refused.status_code == 401
        ids = []
        for n in range(3):
            body = {"name": f"k{n}", "budget": PRICE, "chargeAt": "cost"}
            created = await http.post("/v1/admin/keys", json=body, headers=admin)
            assert created.status_code == 201, created.text
            ids.append(created.json()["key"]["id"])
        first = (await http.get("/v1/admin/keys?limit=2", headers=admin)).json()
        rest = await http.get(f"/v1/admin/keys?limit=2&cursor={first['nextCursor']}", headers=admin)
        assert [k["id"] for k in first["keys"] + rest.json()["keys"]] == sorted(ids)
        assert rest.json()["nextCursor"] is None
        topped = await http.post(
            f"/v1/admin/keys/{ids[0]}/topup", json={"amount": PRICE}, headers=admin
        )
        assert topped.json()["budget"] == str(2 * PRICE)
        revoked = await http.post(f"/v1/admin/keys/{ids[0]}/revoke", headers=admin)
        assert revoked.json()["status"] == "revoked"
        unknown = await http.get("/v1/admin/keys/key_unknown", headers=admin)
        assert unknown.json()["error"] == "api_key_not_found"
        taken = await http.post("/v1/admin/keys", json={"name": "k1"}, headers=admin)
        assert taken.json()["error"] == "api_key_name_taken"
