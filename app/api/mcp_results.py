"""MCP tool results in our vocabulary: the x402 `PaymentRequired`, errors, answers.

Every result carries its JSON twice, as the x402 MCP transport asks: in `structuredContent`
and as `content[0].text`, for clients that read only text.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError
from x402.mcp.constants import MCP_PAYMENT_RESPONSE_META_KEY
from x402.schemas import SettleResponse

from app.core.errors import AppError, InvalidRequest
from app.core.metrics import PAYMENTS_REJECTED
from app.payments.offer import Offer

UNPAID = 'Payment required: call again with the signed payment in _meta["x402/payment"]'


def tool_result(
    structured: dict[str, Any], *, error: bool, meta: dict[str, Any] | None = None
) -> CallToolResult:
    """A result whose text is the JSON of its structured content."""
    text = json.dumps(structured, separators=(",", ":"))
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structuredContent=structured,
        isError=error,
        _meta=meta,
    )


def receipt_meta(receipt: SettleResponse | None) -> dict[str, Any] | None:
    """`_meta["x402/payment-response"]`: the settlement of the payment that bought the job."""
    if receipt is None:
        return None
    return {MCP_PAYMENT_RESPONSE_META_KEY: receipt.model_dump(by_alias=True, exclude_none=True)}


def payment_required(offer: Offer, reason: str | None = None) -> CallToolResult:
    """The MCP 402: `isError` with the v2 `PaymentRequired`; `reason` when a payment was refused."""
    if reason is not None:
        PAYMENTS_REJECTED.labels(reason).inc()
    required = offer.required_v2(reason or UNPAID)
    return tool_result(
        required.model_dump(mode="json", by_alias=True, exclude_none=True), error=True
    )


def error_result(exc: AppError, meta: dict[str, Any] | None = None) -> CallToolResult:
    """An AppError as a tool error: the HTTP body (same code), its status and Retry-After."""
    structured: dict[str, Any] = {**exc.body(), "status": exc.status_code}
    retry_after = exc.headers.get("Retry-After")
    if retry_after is not None:
        structured["retryAfter"] = int(retry_after)
    return tool_result(structured, error=True, meta=meta)


def invalid_arguments(exc: ValidationError) -> CallToolResult:
    """The 422 of the HTTP route, as a tool error (`invalid_request`, one entry per field)."""
    fields = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ())) or "arguments",
            "message": err.get("msg"),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return error_result(
        InvalidRequest(summary, code="invalid_request", status_code=422, details={"fields": fields})
    )
