"""The paid MCP tool `edit_image`: x402 over MCP into the same purchase as the HTTP route.

No payment in `_meta["x402/payment"]` → the tool's `PaymentRequired`; a payment → decoded and
checked as a header is, then `app.jobs.purchase.purchase` (ledger, idempotency, limits, spend
cap, refunds: one state machine, two transports), then `app.api.paid_outcome` rendered here.
"""

from __future__ import annotations

from typing import Any

from mcp.types import CallToolResult
from pydantic import ValidationError
from starlette.requests import Request
from x402.mcp.constants import MCP_PAYMENT_META_KEY

from app.api import mcp_results as results
from app.api.bazaar import MCP_EDIT_DISCOVERY, MCP_EDIT_TOOL
from app.api.client_ip import client_address
from app.api.edits import EDIT_PATH
from app.api.paid_outcome import Failed, Refused, outcome
from app.context import Gateway
from app.core.errors import AppError
from app.core.logs import get_logger
from app.jobs.purchase import purchase
from app.payments.current import current_offer
from app.payments.identifiers import idempotency_key_of
from app.payments.incoming import PaymentRejected, parse_payment_object
from app.payments.offer import Offer
from app.upstream.schemas import EditRequest

log = get_logger(__name__)
TOOL_RESOURCE = "mcp://tool/" + MCP_EDIT_TOOL


def mcp_offer(gw: Gateway) -> Offer:
    """The edit's offer with the tool as its resource, at the current price."""
    return current_offer(gw, EDIT_PATH, MCP_EDIT_DISCOVERY, resource_url=TOOL_RESOURCE)


async def call_edit(
    gw: Gateway, arguments: dict[str, Any], meta: dict[str, Any], request: Request | None
) -> CallToolResult:
    """One `tools/call` of `edit_image`: a 402 result, an error, or the accepted job."""
    offer = mcp_offer(gw)
    try:  # as over HTTP: an invalid request is refused before any payment is asked for
        body = EditRequest.model_validate(arguments)
    except ValidationError as exc:
        return results.invalid_arguments(exc)
    raw = meta.get(MCP_PAYMENT_META_KEY)
    if raw is None:
        return results.payment_required(offer)
    client = client_address(request, gw.settings.trusted_proxy_hops) if request else None
    try:
        payment = parse_payment_object(raw, offer)
        key = idempotency_key_of(payment, None, required=gw.settings.payment_identifier_required)
        job = await purchase(
            gw,
            route=EDIT_PATH,
            body=body.upstream_json(),
            payment=payment,
            idempotency_key=key,
            client=client,
        )
        answer = outcome(gw, job, payment)
    except PaymentRejected as exc:
        log.info("mcp payment refused", reason=exc.reason)
        return results.payment_required(offer, exc.reason)
    except AppError as exc:
        return results.error_result(exc)
    log.info("mcp paid job", job_id=job.id, state=job.state, payer=payment.payer)
    if isinstance(answer, Refused):
        return results.payment_required(offer, answer.reason)
    meta_out = results.receipt_meta(answer.receipt)
    if isinstance(answer, Failed):
        return results.error_result(answer.error, meta_out)
    return results.tool_result(answer.view, error=False, meta=meta_out)
