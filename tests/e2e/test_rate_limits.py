"""Signed payments that would reach the facilitator are rate-limited per payer and per client.

Two gateway replicas share one Postgres database and one remote facilitator (which counts
the calls it receives). One proxy hop is trusted, so each test speaks as its own client
address through `X-Forwarded-For`. Payers are fresh keys; the unfunded ones are refused by
the facilitator (insufficient balance), so a counted request is one that reached `/verify`.
"""

from __future__ import annotations

import httpx
import pytest
from eth_account import Account
from eth_utils.crypto import keccak
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job
from sandbox.chain import mint, usdc_balance
from sandbox.world import HOT_WALLET, OPERATOR, World, address
from tests.helpers import EDIT_BODY, PRICE, sign_payment
from tests.worlds import WorldMaker

EDIT_PATH = "/v1/images/edit"
PER_PAYER = 3
PER_CLIENT = 5


@pytest.fixture(scope="module")
def limited(make_module_world: WorldMaker, module_db: str) -> World:
    return make_module_world(
        gateways=2,
        remote_facilitator=True,
        database_url=module_db,
        X402R_VERIFY_RATE_PER_PAYER=f"{PER_PAYER}/minute",
        X402R_VERIFY_RATE_PER_CLIENT=str(PER_CLIENT),  # an int: per minute
        X402R_TRUSTED_PROXY_HOPS="1",
    )


def _key(label: str) -> str:
    return "0x" + keccak(text=f"x402r rate limits {label}").hex()


async def _jobs_of(db: str, payer: str) -> int:
    engine = create_async_engine(db)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(Job).where(Job.payer == payer)
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def _post(world: World, replica: int, client: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            world.gateway_url(replica) + EDIT_PATH,
            json=EDIT_BODY,
            headers={**headers, "X-Forwarded-For": client},
        )


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "payment-response" not in response.headers


async def test_per_payer_limit_holds_across_replicas(limited: World, module_db: str) -> None:
    key = _key("unfunded payer")
    payer = Account.from_key(key).address
    url = limited.gateway_url(0) + EDIT_PATH
    payments = [await sign_payment(url, key) for _ in range(PER_PAYER + 2)]
    verifies = limited.facilitator_calls()["verify"]
    operator = usdc_balance(limited.rpc_url, address(OPERATOR))

    answers = [
        await _post(limited, i % 2, "198.51.100.1", payment) for i, payment in enumerate(payments)
    ]

    assert [r.status_code for r in answers] == [402] * PER_PAYER + [429, 429], [
        r.text for r in answers
    ]
    for refused in answers[:PER_PAYER]:
        assert refused.json()["error"] == "invalid_exact_evm_insufficient_balance"
    for response in answers[PER_PAYER:]:
        _assert_rate_limited(response)
    assert limited.facilitator_calls()["verify"] - verifies == PER_PAYER  # 429s never got there
    assert usdc_balance(limited.rpc_url, payer) == 0
    assert usdc_balance(limited.rpc_url, address(OPERATOR)) == operator
    assert await _jobs_of(module_db, payer) == 0


async def test_per_client_limit_counts_every_payer_of_a_client(limited: World) -> None:
    url = limited.gateway_url(0) + EDIT_PATH
    keys = [_key(f"client payer {i}") for i in range(PER_CLIENT + 2)]
    payments = [await sign_payment(url, key) for key in keys]
    verifies = limited.facilitator_calls()["verify"]

    answers = [
        await _post(limited, i % 2, "198.51.100.2", payment)
        for i, payment in enumerate(payments[: PER_CLIENT + 1])
    ]
    other_client = await _post(limited, 0, "198.51.100.3", payments[-1])

    assert [r.status_code for r in answers] == [402] * PER_CLIENT + [429]
    _assert_rate_limited(answers[-1])
    assert other_client.status_code == 402  # another address has its own allowance
    assert limited.facilitator_calls()["verify"] - verifies == PER_CLIENT + 1


async def test_replays_and_unpaid_requests_are_not_counted(limited: World, module_db: str) -> None:
    key = _key("funded payer")
    payer = Account.from_key(key).address
    mint(limited.rpc_url, payer, PRICE)
    client = "198.51.100.4"
    for replica in (0, 1, 0, 1, 0, 1, 0):  # more unpaid 402s than either limit
        async with httpx.AsyncClient(timeout=30) as http:
            unpaid = await http.post(
                limited.gateway_url(replica) + EDIT_PATH,
                json=EDIT_BODY,
                headers={"X-Forwarded-For": client},
            )
        assert unpaid.status_code == 402
    payment = await sign_payment(limited.gateway_url(0) + EDIT_PATH, key)
    hot_wallet = usdc_balance(limited.rpc_url, address(HOT_WALLET))

    first = await _post(limited, 0, client, payment)
    replays = [await _post(limited, i % 2, client, payment) for i in range(PER_CLIENT + 2)]

    assert first.status_code == 200, first.text
    job_id = first.json()["jobId"]
    assert [r.status_code for r in replays] == [200] * (PER_CLIENT + 2)
    assert {r.json()["jobId"] for r in replays} == {job_id}
    assert usdc_balance(limited.rpc_url, payer) == 0  # charged exactly once
    assert usdc_balance(limited.rpc_url, address(HOT_WALLET)) < hot_wallet  # one upstream buy
    assert await _jobs_of(module_db, payer) == 1


async def test_readyz_reuses_the_facilitators_supported_answer(limited: World) -> None:
    before = limited.facilitator_calls()["supported"]
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(25):
            ready = await http.get(limited.gateway_url(0) + "/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["facilitator"] == "ok"
    assert limited.facilitator_calls()["supported"] - before <= 1
