"""The product end to end: the official SDK pays the gateway, the gateway pays the upstream."""

from __future__ import annotations

import httpx
import pytest

from sandbox.chain import usdc_balance
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, address, key_hex
from tests.helpers import (
    EDIT_BODY,
    MONEY_PATH,
    PRICE,
    UPSTREAM_PRICE,
    balances,
    db_rows,
    ledger_balances,
    paid_post,
    poll_until_done,
    sign_payment,
)


@pytest.mark.parametrize("v1_only", [False, True], ids=["x402-v2", "x402-v1"])
async def test_paid_edit_completes_and_moves_exact_amounts(
    world: World, pg_url: str, v1_only: bool
) -> None:
    before = balances(world, MONEY_PATH)
    url = world.gateway_url() + "/v1/images/edit"

    response = await paid_post(url, key_hex(PAYER), v1_only=v1_only)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"  # a receipt, never cached
    accepted = response.json()
    assert accepted["status"] == "processing"
    assert accepted["statusUrl"] == f"{world.gateway_url()}/v1/jobs/{accepted['jobId']}"
    settlement_header = "X-PAYMENT-RESPONSE" if v1_only else "PAYMENT-RESPONSE"
    assert settlement_header in response.headers

    job = await poll_until_done(accepted["statusUrl"])
    assert job["status"] == "completed"
    image = job["images"][0]
    png = httpx.get(image["url"]).content
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert job["payment"]["amount"] == str(PRICE)
    assert job["payment"]["payer"] == address(PAYER)

    after = balances(world, MONEY_PATH)
    assert after[PAYER] - before[PAYER] == -PRICE
    assert after[OPERATOR] - before[OPERATOR] == PRICE
    assert after[HOT_WALLET] - before[HOT_WALLET] == -UPSTREAM_PRICE
    assert after[UPSTREAM_PAYEE] - before[UPSTREAM_PAYEE] == UPSTREAM_PRICE

    row, ledger = await db_rows(pg_url, accepted["jobId"])
    assert row.state == "completed"
    assert row.x402_version == (1 if v1_only else 2)
    assert row.pay_amount == PRICE
    assert row.upstream_amount == UPSTREAM_PRICE
    assert row.upstream_status_url.startswith(world.upstream_base)
    assert [(e.kind, e.amount) for e in ledger] == [("charge", PRICE), ("upstream", UPSTREAM_PRICE)]
    assert ledger[0].tx_hash == job["payment"]["transaction"]
    totals = await ledger_balances(pg_url)
    assert totals["margin"] == totals["charge"] - totals["upstream"] - totals["refund"]


async def test_upstream_path_alias_serves_the_same_402(world: World) -> None:
    async with httpx.AsyncClient() as http:
        ours = await http.post(world.gateway_url() + "/v1/images/edit", json=EDIT_BODY)
        alias = await http.post(
            world.gateway_url() + "/api/ai/generations/images/nano-banana-edit", json=EDIT_BODY
        )
    assert ours.status_code == alias.status_code == 402
    assert alias.json()["accepts"][0]["resource"].endswith("/nano-banana-edit")
    assert alias.json()["accepts"][0]["maxAmountRequired"] == str(PRICE)


async def test_resending_the_same_payment_returns_the_same_job(world: World) -> None:
    url = world.gateway_url() + "/v1/images/edit"
    payment = await sign_payment(url, key_hex(PAYER))
    before = usdc_balance(world.rpc_url, address(PAYER))
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.post(url, json=EDIT_BODY, headers=payment)
        again = await http.post(url, json=EDIT_BODY, headers=payment)
        other_body = await http.post(url, json={**EDIT_BODY, "prompt": "x"}, headers=payment)
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.json()["jobId"] == first.json()["jobId"]
    assert other_body.status_code == 409
    assert other_body.json()["error"] == "idempotency_conflict"
    assert usdc_balance(world.rpc_url, address(PAYER)) == before - PRICE
