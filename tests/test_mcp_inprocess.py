"""The MCP endpoint in-process: how payments in `_meta` are read, and errors as tool results.

The facilitator is unreachable, so no payment gets past verification and no job is written
(`start_app` checks): what is tested is the decoding and the mapping to MCP answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from x402.mcp import MCP_PAYMENT_META_KEY
from x402.schemas import PaymentRequired

from sandbox.pay import EDIT_BODY
from tests.inprocess_app import client_for, start_app
from tests.settings_factory import make_offer, sign_v2, wire


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    async for application in start_app(Path(tmp_path_factory.mktemp("mcp"))):
        yield application


async def call(app: FastAPI, payment: object = None, **arguments: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "edit_image", "arguments": {**EDIT_BODY, **arguments}}
    if payment is not None:
        params["_meta"] = {MCP_PAYMENT_META_KEY: payment}
    message = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}
    async with client_for(app) as http:
        response = await http.post(
            "/mcp", json=message, headers={"Accept": "application/json, text/event-stream"}
        )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def test_a_payment_as_a_json_string_reaches_the_facilitator(app: FastAPI) -> None:
    payment = json.dumps(wire(await sign_v2(make_offer())))
    result = await call(app, payment)
    assert result["isError"] is True
    assert result["structuredContent"]["error"] == "facilitator_unavailable"
    assert result["structuredContent"]["status"] == 503
    assert result["structuredContent"]["retryAfter"] == 2


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda p: "{not json", "invalid_payment_header"),
        (lambda p: [p], "invalid_payment_header"),
        (lambda p: {**p, "x402Version": 3}, "unsupported_x402_version"),
        (lambda p: {**p, "payload": "x"}, "invalid_payment_payload"),
        (lambda p: {**p, "accepted": {**p["accepted"], "amount": "1"}}, "amount_mismatch"),
    ],
    ids=["not-json", "not-an-object", "version", "payload", "amount"],
)
async def test_refused_payments_are_the_payment_required_again(
    app: FastAPI, tamper: Any, reason: str
) -> None:
    result = await call(app, tamper(wire(await sign_v2(make_offer()))))
    assert result["isError"] is True
    required = PaymentRequired.model_validate(result["structuredContent"])
    assert required.error == reason
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]


async def test_unknown_tools_and_arguments(app: FastAPI) -> None:
    message = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "nope"}}
    async with client_for(app) as http:
        response = await http.post(
            "/mcp", json=message, headers={"Accept": "application/json, text/event-stream"}
        )
    assert response.json()["result"]["structuredContent"]["error"] == "unknown_tool"
    invalid = await call(app, None, image_urls=[])
    assert invalid["structuredContent"]["error"] == "invalid_request"
    assert invalid["structuredContent"]["details"]["fields"][0]["field"] == "image_urls"
