"""Several ways to pay in `accepts`: a second TestUSDC on the local chain, with its own pay-to.

The second token is the same contract code at another address (its own EIP-712 verifying
contract), so this tests a second asset on one chain id; a second network is checked by the
configuration rules and the chain reader's refusal to read a network it has no RPC for.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from eth_account import Account
from web3 import Web3
from x402 import x402Client
from x402.http import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.schemas import PaymentRequired, PaymentRequiredV1

from app.core.settings import BASE_USDC
from app.payments.chain import ChainReader, Transfer
from sandbox.chain import install_token, mint, usdc_balance
from sandbox.pay import EDIT_BODY, payer_client
from sandbox.world import OPERATOR, PAYER, World, address, key_hex
from tests.helpers import PRICE, db_rows, poll_until_done
from tests.worlds import WorldMaker

SECOND = str(Web3.to_checksum_address("0x5ec0" + "00" * 17 + "02"))
SECOND_PAY_TO = str(Account.create().address)
NOT_OFFERED = str(Web3.to_checksum_address("0x5ec0" + "00" * 17 + "03"))
EXTRA = [{"network": "base", "asset": SECOND, "pay_to": SECOND_PAY_TO, "name": "USD Coin",
          "version": "2"}]  # fmt: skip


@pytest.fixture(scope="module")
def two_assets(make_module_world: WorldMaker, module_db: str) -> World:
    world = make_module_world(
        job_delay_s=0.3, database_url=module_db, X402R_EXTRA_OFFERS=json.dumps(EXTRA)
    )
    install_token(world.rpc_url, SECOND)
    install_token(world.rpc_url, NOT_OFFERED)
    for token in (SECOND, NOT_OFFERED):
        mint(world.rpc_url, address(PAYER), 10 * PRICE, token=token)
    return world


def holdings(world: World) -> dict[tuple[str, str], int]:
    """Balances of the payer and both payees in both offered tokens (and the third)."""
    parties = {"payer": address(PAYER), "operator": address(OPERATOR), "second": SECOND_PAY_TO}
    return {
        (who, token): usdc_balance(world.rpc_url, at, token)
        for who, at in parties.items()
        for token in (BASE_USDC, SECOND, NOT_OFFERED)
    }


def moved(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> dict[Any, int]:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


async def unpaid(world: World) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(world.gateway_url() + "/v1/images/edit", json=EDIT_BODY)
    assert response.status_code == 402
    return response


def _client(*, v1_only: bool = False) -> x402Client:
    """The SDK payer; its spend controls allow only tokens it knows, and ours is a test token."""
    return payer_client(key_hex(PAYER), v1_only=v1_only).set_spend_controls(False)


async def signed_for(world: World, asset: str, *, v1: bool = False, **changes: Any) -> str:
    """A payment signed by the SDK for the offered option on `asset` (with `changes`)."""
    response = await unpaid(world)
    if v1:
        body = PaymentRequiredV1.model_validate(response.json())
        (chosen,) = [a for a in body.accepts if a.asset == SECOND]
        body.accepts = [chosen.model_copy(update={"asset": asset, **changes})]
        payload = await _client(v1_only=True).create_payment_payload(body)
    else:
        required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
        assert isinstance(required, PaymentRequired)
        (chosen2,) = [a for a in required.accepts if a.asset == SECOND]
        required.accepts = [chosen2.model_copy(update={"asset": asset, **changes})]
        payload = await _client().create_payment_payload(required)
    return encode_payment_signature_header(payload)


async def post(world: World, header: str, name: str = "PAYMENT-SIGNATURE") -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            world.gateway_url() + "/v1/images/edit", json=EDIT_BODY, headers={name: header}
        )


async def test_every_option_is_offered_everywhere(two_assets: World) -> None:
    response = await unpaid(two_assets)
    required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    v2 = [(str(a.network), a.asset, a.pay_to, a.extra) for a in required.accepts]
    domain = {"name": "USD Coin", "version": "2"}
    assert v2 == [
        ("eip155:8453", BASE_USDC, address(OPERATOR), domain),
        ("eip155:8453", SECOND, SECOND_PAY_TO, domain),
    ]
    v1 = [(a["network"], a["asset"], a["payTo"]) for a in response.json()["accepts"]]
    assert v1 == [("base", BASE_USDC, address(OPERATOR)), ("base", SECOND, SECOND_PAY_TO)]
    call = {"name": "edit_image", "arguments": EDIT_BODY}
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}
    async with httpx.AsyncClient(timeout=30) as http:
        listed = (await http.get(two_assets.gateway_url() + "/.well-known/x402")).json()
        mcp = await http.post(
            two_assets.gateway_url() + "/mcp",
            json=message,
            headers={"Accept": "application/json, text/event-stream"},
        )
    for item in listed["items"]:
        assert [a["asset"] for a in item["accepts"]] == [BASE_USDC, SECOND]
        assert item["assets"] == [BASE_USDC, SECOND]
    tool_402 = PaymentRequired.model_validate(mcp.json()["result"]["structuredContent"])
    assert [(a.asset, a.pay_to) for a in tool_402.accepts] == [
        (BASE_USDC, address(OPERATOR)),
        (SECOND, SECOND_PAY_TO),
    ]


@pytest.mark.parametrize("v1", [False, True], ids=["x402-v2", "x402-v1"])
async def test_a_payment_on_the_second_option_settles_in_that_asset(
    two_assets: World, module_db: str, v1: bool
) -> None:
    before = holdings(two_assets)
    header = await signed_for(two_assets, SECOND, v1=v1)
    response = await post(two_assets, header, "X-PAYMENT" if v1 else "PAYMENT-SIGNATURE")
    assert response.status_code == 200, response.text
    receipt = decode_payment_response_header(
        response.headers["X-PAYMENT-RESPONSE" if v1 else "PAYMENT-RESPONSE"]
    )
    assert receipt.network == ("base" if v1 else "eip155:8453")
    assert moved(before, holdings(two_assets)) == {
        ("payer", SECOND): -PRICE,
        ("second", SECOND): PRICE,
    }
    job = await poll_until_done(response.json()["statusUrl"])
    assert job["status"] == "completed"
    row, ledger = await db_rows(module_db, response.json()["jobId"])
    assert (row.pay_network, row.pay_asset, row.pay_to) == ("eip155:8453", SECOND, SECOND_PAY_TO)
    assert row.payment_requirements["asset"] == SECOND
    assert (ledger[0].kind, ledger[0].amount, ledger[0].tx_hash) == (
        "charge",
        PRICE,
        receipt.transaction,
    )
    # The on-chain proof reads the token paid in: the same transaction pays nothing in USDC.
    primary = ChainReader(two_assets.rpc_url, BASE_USDC, network="eip155:8453")
    try:
        expected = Transfer(address(PAYER), SECOND_PAY_TO, PRICE)
        nonce = row.pay_nonce
        assert await primary.at("eip155:8453", SECOND).pays(receipt.transaction, expected, nonce)
        assert not await primary.pays(receipt.transaction, expected, nonce)
        with pytest.raises(LookupError):
            primary.at("eip155:84532", SECOND)  # no RPC for that network: never read elsewhere
    finally:
        await primary.close()


@pytest.mark.parametrize(
    ("asset", "changes", "reason"),
    [
        (NOT_OFFERED, {}, "asset_mismatch"),  # a token we do not offer
        (SECOND, {"pay_to": address(OPERATOR)}, "recipient_mismatch"),  # mixes two options
        (SECOND, {"network": "eip155:84532"}, "network_mismatch"),
    ],
    ids=["asset-not-offered", "options-mixed", "network-not-offered"],
)
async def test_a_payment_on_an_option_we_do_not_offer_moves_nothing(
    two_assets: World, asset: str, changes: dict[str, Any], reason: str
) -> None:
    before = holdings(two_assets)
    response = await post(two_assets, await signed_for(two_assets, asset, **changes))
    assert response.status_code == 402
    assert response.json()["error"] == reason
    assert moved(before, holdings(two_assets)) == {}


async def test_a_v1_payment_for_a_token_we_do_not_offer_moves_nothing(two_assets: World) -> None:
    before = holdings(two_assets)
    header = await signed_for(two_assets, NOT_OFFERED, v1=True, pay_to=SECOND_PAY_TO)
    response = await post(two_assets, header, "X-PAYMENT")
    assert response.status_code == 402
    # Signed for another token's domain: it recovers under none of ours.
    assert response.json()["error"] == "invalid_exact_evm_payload_signature"
    assert moved(before, holdings(two_assets)) == {}
