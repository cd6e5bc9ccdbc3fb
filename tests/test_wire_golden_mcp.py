"""x402 over MCP on the wire: raw JSON-RPC to `/mcp`, decoded with the SDK's MCP parsers.

The payment-required tool result (`isError`, `structuredContent` and the same JSON as
`content[0].text`) and the receipt in `_meta["x402/payment-response"]` of a real paid call
from the session `world`, field by field, the receipt checked against the chain.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    declare_payment_identifier_extension,
)
from x402.mcp import MCP_PAYMENT_META_KEY, MCP_PAYMENT_RESPONSE_META_KEY
from x402.mcp.types import MCPToolResult
from x402.mcp.utils import extract_payment_required_from_result
from x402.schemas import PaymentRequired, SettleResponse

from app.api.bazaar import MCP_EDIT_DISCOVERY
from app.api.mcp_results import UNPAID
from app.core.settings import BASE_USDC
from app.upstream import listing
from sandbox.chain import usdc_balance
from sandbox.pay import payer_client
from sandbox.world import OPERATOR, PAYER, World, address, key_hex
from tests.helpers import EDIT_BODY, PRICE

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def _rpc(world: World, method: str, params: dict[str, Any]) -> dict[str, Any]:
    message = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(world.gateway_url() + "/mcp", json=message, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer: dict[str, Any] = response.json()
    assert answer["jsonrpc"] == "2.0"
    assert answer["id"] == 7
    assert "error" not in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


def _sdk_view(result: dict[str, Any]) -> MCPToolResult:
    return MCPToolResult(
        content=result["content"],
        is_error=result.get("isError", False),
        meta=result.get("_meta") or {},
        structured_content=result.get("structuredContent"),
    )


async def _unpaid(world: World) -> dict[str, Any]:
    return await _rpc(world, "tools/call", {"name": "edit_image", "arguments": EDIT_BODY})


async def test_payment_required_tool_result(world: World) -> None:
    result = await _unpaid(world)
    assert result["isError"] is True
    assert set(result) == {"content", "structuredContent", "isError"}
    (text,) = result["content"]
    assert text["type"] == "text"
    assert json.loads(text["text"]) == result["structuredContent"]  # the same object twice
    required = extract_payment_required_from_result(_sdk_view(result))
    assert isinstance(required, PaymentRequired)
    assert required.x402_version == 2
    assert required.error == UNPAID
    assert required.resource is not None
    assert required.resource.url == "mcp://tool/edit_image"
    assert required.resource.description == listing.DESCRIPTION
    assert required.resource.mime_type == "application/json"
    (accepted,) = required.accepts
    assert accepted.scheme == "exact"
    assert accepted.network == "eip155:8453"
    assert accepted.amount == str(PRICE)
    assert accepted.asset == BASE_USDC
    assert accepted.pay_to == address(OPERATOR)
    assert accepted.max_timeout_seconds == 300
    assert accepted.extra == {"name": "USD Coin", "version": "2"}
    assert required.extensions == {
        PAYMENT_IDENTIFIER: declare_payment_identifier_extension(required=False),
        **MCP_EDIT_DISCOVERY,
    }
    assert required.extensions["bazaar"]["info"]["input"]["type"] == "mcp"
    assert required.extensions["bazaar"]["info"]["input"]["toolName"] == "edit_image"


async def test_paid_call_receipt_in_meta(world: World) -> None:
    required = extract_payment_required_from_result(_sdk_view(await _unpaid(world)))
    assert isinstance(required, PaymentRequired)
    payload = await payer_client(key_hex(PAYER)).create_payment_payload(required)
    payer_before = usdc_balance(world.rpc_url, address(PAYER))
    params = {
        "name": "edit_image",
        "arguments": EDIT_BODY,
        "_meta": {MCP_PAYMENT_META_KEY: payload.model_dump(by_alias=True, exclude_none=True)},
    }
    result = await _rpc(world, "tools/call", params)
    assert result["isError"] is False
    accepted = result["structuredContent"]
    assert json.loads(result["content"][0]["text"]) == accepted
    assert accepted["status"] == "processing"
    assert accepted["statusUrl"] == f"{world.gateway_url()}/v1/jobs/{accepted['jobId']}"
    assert set(result["_meta"]) == {MCP_PAYMENT_RESPONSE_META_KEY}
    receipt = SettleResponse.model_validate(result["_meta"][MCP_PAYMENT_RESPONSE_META_KEY])
    assert receipt.success is True
    assert receipt.error_reason is None
    assert receipt.network == "eip155:8453"
    assert receipt.payer == address(PAYER)
    assert receipt.amount == str(PRICE)
    assert len(receipt.transaction) == 66
    assert usdc_balance(world.rpc_url, address(PAYER)) == payer_before - PRICE


async def test_tools_list(world: World) -> None:
    result = await _rpc(world, "tools/list", {})
    names = [tool["name"] for tool in result["tools"]]
    assert names == ["edit_image", "get_job"]
    edit = result["tools"][0]
    assert edit["inputSchema"]["required"] == ["prompt", "image_urls"]
