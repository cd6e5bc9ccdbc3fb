"""The wire format, field by field, as the SDK's own parsers read it from a running gateway.

The 402 (v2 `PAYMENT-REQUIRED` header, v1 body) and the receipts of real paid calls (v2
`PAYMENT-RESPONSE`, v1 `X-PAYMENT-RESPONSE`) from the session `world`: every field is asserted,
and each receipt is checked against the chain (the transaction moved exactly our price from the
payer to the operator).
"""

from __future__ import annotations

import httpx
import pytest
from web3 import Web3
from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    declare_payment_identifier_extension,
)
from x402.http import decode_payment_required_header, decode_payment_response_header
from x402.schemas import PaymentRequired, PaymentRequiredV1

from app.api.bazaar import EDIT_DISCOVERY
from app.api.edits import EDIT_PATH, UPSTREAM_PATH
from app.core.settings import BASE_USDC
from app.upstream import listing
from sandbox.chain import wait_for_receipt
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, address, key_hex
from tests.helpers import EDIT_BODY, PRICE, UPSTREAM_PRICE, balances, moved, paid_post

UNPAID_ERROR = "Payment required: send X-PAYMENT (x402 v1) or PAYMENT-SIGNATURE (x402 v2)"
EXTRA = {"name": "USD Coin", "version": "2"}
TIMEOUT_S = 300
TRANSFER = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")

pytestmark = pytest.mark.parametrize("path", [EDIT_PATH, UPSTREAM_PATH])


async def _unpaid(world: World, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(world.gateway_url() + path, json=EDIT_BODY)
    assert response.status_code == 402
    return response


async def test_v2_payment_required_header(world: World, path: str) -> None:
    response = await _unpaid(world, path)
    raw = response.headers["PAYMENT-REQUIRED"]
    required = decode_payment_required_header(raw)
    assert isinstance(required, PaymentRequired)
    assert required.x402_version == 2
    assert required.error == UNPAID_ERROR
    assert required.resource is not None
    assert required.resource.url == world.gateway_url() + path
    assert required.resource.description == listing.DESCRIPTION
    assert required.resource.mime_type == "application/json"
    (accepted,) = required.accepts
    assert accepted.scheme == "exact"
    assert accepted.network == "eip155:8453"  # v2 names networks by CAIP-2
    assert accepted.amount == str(PRICE)  # v2: `amount`
    assert accepted.asset == BASE_USDC
    assert accepted.pay_to == address(OPERATOR)
    assert accepted.max_timeout_seconds == TIMEOUT_S
    assert accepted.extra == EXTRA
    assert required.extensions == {
        PAYMENT_IDENTIFIER: declare_payment_identifier_extension(required=False),
        **EDIT_DISCOVERY,
    }
    # Nothing more on the wire than the model holds.
    assert set(required.model_dump(by_alias=True, exclude_none=True)) == {
        "x402Version",
        "error",
        "resource",
        "accepts",
        "extensions",
    }


async def test_v1_payment_required_body(world: World, path: str) -> None:
    response = await _unpaid(world, path)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"x402Version", "error", "accepts"}
    required = PaymentRequiredV1.model_validate(body)
    assert required.x402_version == 1
    assert required.error == UNPAID_ERROR
    (accepted,) = required.accepts
    assert set(body["accepts"][0]) == {
        "scheme",
        "network",
        "maxAmountRequired",
        "resource",
        "description",
        "mimeType",
        "outputSchema",
        "payTo",
        "maxTimeoutSeconds",
        "asset",
        "extra",
    }
    assert accepted.scheme == "exact"
    assert accepted.network == "base"  # v1 names networks by name
    assert accepted.max_amount_required == str(PRICE)  # v1: `maxAmountRequired`
    assert accepted.resource == world.gateway_url() + path
    assert accepted.description == listing.DESCRIPTION
    assert accepted.mime_type == "application/json"
    assert accepted.pay_to == address(OPERATOR)
    assert accepted.max_timeout_seconds == TIMEOUT_S
    assert accepted.asset == BASE_USDC
    assert accepted.extra == EXTRA
    assert accepted.output_schema == {
        "input": listing.INPUT_SCHEMA,
        "output": listing.OUTPUT_SCHEMA,
    }


def _transfers(world: World, tx: str) -> list[tuple[str, str, int]]:
    """(from, to, amount) of every USDC Transfer the transaction emitted."""
    receipt = wait_for_receipt(world.rpc_url, tx)
    return [
        (
            Web3.to_checksum_address("0x" + log["topics"][1][-40:]),
            Web3.to_checksum_address("0x" + log["topics"][2][-40:]),
            int(log["data"], 16),
        )
        for log in receipt["logs"]
        if log["address"].lower() == BASE_USDC.lower() and log["topics"][0] == TRANSFER
    ]


@pytest.mark.parametrize("version", [2, 1], ids=["x402-v2", "x402-v1"])
async def test_receipt_of_a_paid_call(world: World, path: str, version: int) -> None:
    before = balances(world)
    response = await paid_post(world.gateway_url() + path, key_hex(PAYER), v1_only=version == 1)
    assert response.status_code == 200, response.text
    name, other = (
        ("PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE")
        if version == 2
        else ("X-PAYMENT-RESPONSE", "PAYMENT-RESPONSE")
    )
    assert other not in response.headers
    receipt = decode_payment_response_header(response.headers[name])
    assert receipt.success is True
    assert receipt.error_reason is None
    assert receipt.network == ("eip155:8453" if version == 2 else "base")
    assert receipt.payer == address(PAYER)
    assert receipt.amount == str(PRICE)
    assert len(receipt.transaction) == 66
    assert receipt.transaction.startswith("0x")
    assert _transfers(world, receipt.transaction) == [(address(PAYER), address(OPERATOR), PRICE)]
    assert moved(world, before) == {
        PAYER: -PRICE,
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
