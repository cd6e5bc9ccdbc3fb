"""x402 over MCP end to end: the SDK's MCP client pays the `edit_image` tool on the local chain.

The paid tool goes through the same purchase as `POST /v1/images/edit`: the same ledger,
idempotency (one payment, one job) and refusals, checked here with exact balances.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.types import CallToolResult
from x402.mcp import MCP_PAYMENT_META_KEY, MCP_PAYMENT_RESPONSE_META_KEY
from x402.mcp.client import x402MCPSession
from x402.mcp.utils import convert_mcp_result, extract_payment_required_from_result
from x402.schemas import PaymentRequired, SettleResponse

from sandbox.pay import payer_client
from sandbox.world import PAYER, World, address, key_hex
from tests.helpers import EDIT_BODY, MONEY_PATH, PRICE, SERVED, balances, db_rows, moved
from tests.worlds import WorldMaker


@pytest.fixture(scope="module")
def mcp_world(make_module_world: WorldMaker, module_db: str) -> World:
    return make_module_world(job_delay_s=0.3, database_url=module_db)


@asynccontextmanager
async def mcp_session(world: World) -> AsyncIterator[ClientSession]:
    """A plain MCP client session with the gateway's `/mcp` (Streamable HTTP)."""
    async with (
        streamablehttp_client(world.gateway_url() + "/mcp") as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def signed_payment(session: ClientSession, key: str) -> dict[str, Any]:
    """Call the tool unpaid, read its PaymentRequired with the SDK, sign it with the SDK."""
    unpaid = await session.call_tool("edit_image", EDIT_BODY)
    required = extract_payment_required_from_result(convert_mcp_result(unpaid))
    assert isinstance(required, PaymentRequired), unpaid
    assert required.accepts[0].amount == str(PRICE)
    assert required.resource is not None
    assert required.resource.url == "mcp://tool/edit_image"
    payload = await payer_client(key).create_payment_payload(required)
    return payload.model_dump(by_alias=True, exclude_none=True)


async def paid_call(session: ClientSession, payment: dict[str, Any]) -> CallToolResult:
    return await session.call_tool("edit_image", EDIT_BODY, meta={MCP_PAYMENT_META_KEY: payment})


async def read_until_done(session: ClientSession, job_id: str) -> dict[str, Any]:
    """Read the job with the free tool until it leaves `processing`."""
    for _ in range(200):
        result = await session.call_tool("get_job", {"jobId": job_id})
        assert not result.isError, result
        job = result.structuredContent
        assert job is not None
        if job["status"] != "processing":
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"{job_id} still processing")


async def test_tools_are_listed(mcp_world: World) -> None:
    async with mcp_session(mcp_world) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == {"edit_image", "get_job"}
    assert tools["get_job"].annotations is not None
    assert tools["get_job"].annotations.readOnlyHint is True


async def test_sdk_mcp_client_pays_and_moves_exact_amounts(
    mcp_world: World, module_db: str
) -> None:
    before = balances(mcp_world, MONEY_PATH)
    async with mcp_session(mcp_world) as session:
        paying = x402MCPSession(session, payer_client(key_hex(PAYER)))
        result = await paying.call_tool("edit_image", EDIT_BODY)
        assert result.payment_made
        assert not result.is_error, result.content
        receipt = result.payment_response
        assert isinstance(receipt, SettleResponse)
        assert receipt.success
        assert receipt.payer == address(PAYER)
        accepted = result.raw_result.structuredContent
        assert accepted["status"] == "processing"
        job = await read_until_done(session, accepted["jobId"])
    assert job["status"] == "completed"
    assert job["payment"]["transaction"] == receipt.transaction
    assert moved(mcp_world, before) == SERVED
    row, ledger = await db_rows(module_db, accepted["jobId"])
    assert row.pay_amount == PRICE
    assert row.route == "/v1/images/edit"
    assert (ledger[0].kind, ledger[0].amount) == ("charge", PRICE)
    assert ledger[0].tx_hash == receipt.transaction


async def test_replayed_payment_returns_the_same_job_charged_once(mcp_world: World) -> None:
    before = balances(mcp_world, MONEY_PATH)
    async with mcp_session(mcp_world) as session:
        payment = await signed_payment(session, key_hex(PAYER))
        first = await paid_call(session, payment)
        again = await paid_call(session, payment)
        assert not first.isError, first
        assert not again.isError, again
        assert first.structuredContent is not None
        assert again.structuredContent is not None
        job_id = first.structuredContent["jobId"]
        assert again.structuredContent["jobId"] == job_id
        # Both answers carry the receipt of the one settlement (the same payment bought it).
        assert first.meta is not None
        assert again.meta is not None
        receipts = [r.meta[MCP_PAYMENT_RESPONSE_META_KEY]["transaction"] for r in (first, again)]
        assert receipts[0] == receipts[1]
        # The same payment for another request: the HTTP 409's code, and no job named.
        other = await session.call_tool(
            "edit_image", {**EDIT_BODY, "prompt": "x"}, meta={MCP_PAYMENT_META_KEY: payment}
        )
        assert other.isError
        assert other.structuredContent is not None
        assert other.structuredContent["error"] == "idempotency_conflict"
        assert other.structuredContent["status"] == 409
        assert job_id not in json.dumps(other.structuredContent)
        await read_until_done(session, job_id)
    assert moved(mcp_world, before) == SERVED


async def test_tampered_payment_is_refused_with_nothing_moved(mcp_world: World) -> None:
    before = balances(mcp_world, MONEY_PATH)
    async with mcp_session(mcp_world) as session:
        payment = await signed_payment(session, key_hex(PAYER))
        # Pay ourselves less than signed: the signature no longer matches the authorization.
        payment["payload"]["authorization"]["value"] = str(PRICE)
        payment["payload"]["authorization"]["to"] = address(PAYER)
        refused = await paid_call(session, payment)
        underpaid = await signed_payment(session, key_hex(PAYER))
        underpaid["accepted"]["amount"] = "1"
        cheap = await paid_call(session, underpaid)
    for result, reason in ((refused, "recipient_mismatch"), (cheap, "amount_mismatch")):
        assert result.isError
        required = extract_payment_required_from_result(convert_mcp_result(result))
        assert isinstance(required, PaymentRequired), result
        assert required.error == reason
    assert moved(mcp_world, before) == {}


async def test_invalid_arguments_are_refused_before_any_payment(mcp_world: World) -> None:
    async with mcp_session(mcp_world) as session:
        result = await session.call_tool("edit_image", {**EDIT_BODY, "num_images": 99})
    assert result.isError
    assert result.structuredContent is not None
    assert result.structuredContent["error"] == "invalid_request"
    assert result.structuredContent["status"] == 422


async def test_read_tool_knows_no_unknown_job(mcp_world: World) -> None:
    async with mcp_session(mcp_world) as session:
        missing = await session.call_tool("get_job", {"jobId": "job_" + "A" * 24})
        malformed = await session.call_tool("get_job", {"jobId": "../admin"})
    assert missing.isError
    assert missing.structuredContent is not None
    assert missing.structuredContent["error"] == "job_not_found"
    assert malformed.isError
    assert malformed.structuredContent is not None
    assert malformed.structuredContent["error"] == "invalid_request"
